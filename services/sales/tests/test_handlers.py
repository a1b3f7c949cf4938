"""The events the sales service consumes: rules directly, delivery through the real broker."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from services.sales import deals, totals
from services.sales.app import make_database
from services.sales.handlers import handlers
from services.sales.models import Deal, DealTotal, Lead, LeadBehaviour, Task
from services.sales.pipelines import ensure_default_pipeline
from shared.bus import PermanentError
from shared.deadletters import list_dead_letters, publish_raw
from shared.testing import consuming_worker, handle_event, make_event, outbox_events, wait_until


@pytest.fixture
def service_db(make_settings, database_url):
    settings = make_settings("sales", database_url=database_url)
    db = make_database(settings)
    db.create_all()
    with db.session() as session:
        ensure_default_pipeline(session)
    yield settings, db
    db.dispose()


def handle(db, envelope) -> None:
    handle_event(db, handlers(), envelope)


def new_lead(db, **fields) -> str:
    with db.session() as session:
        lead = Lead(first_name="Grace", last_name="Hopper", **fields)
        if lead.email:
            lead.email_key = lead.email.lower()
        session.add(lead)
        session.flush()
        return lead.id


def new_deal(db, **fields) -> str:
    with db.session() as session:
        data = {"name": "Hopper onboarding", "amount": Decimal("1250.00"), **fields}
        return deals.create_deal(session, data, None).id


def new_task(db, **fields) -> str:
    with db.session() as session:
        task = Task(title="Call Grace Hopper", notes="likes COBOL", **fields)
        session.add(task)
        session.flush()
        return task.id


def test_an_erased_contact_leaves_anonymous_leads_deals_and_tasks(service_db):
    _, db = service_db
    person, merged = str(uuid.uuid4()), str(uuid.uuid4())
    lead_id = new_lead(db, email="grace@navy.mil", phone="+1 555 0100", contact_id=person)
    deal_id = new_deal(db, contact_id=person, description="Grace's team")
    other_deal = new_deal(db, contact_id=merged)
    task_id = new_task(db, contact_id=person)

    handle(db, make_event("contact.erased", {"id": person, "merged_ids": [merged]}))

    with db.session() as session:
        lead = session.get(Lead, lead_id)
        assert (lead.first_name, lead.email, lead.phone, lead.contact_id) == ("", None, None, None)
        deal = session.get(Deal, deal_id)
        assert "Hopper" not in deal.name and deal.description is None and deal.contact_id is None
        assert deal.amount == Decimal("1250.00") and deal.status == "open"
        assert session.get(Deal, other_deal).contact_id is None
        task = session.get(Task, task_id)
        assert (task.title, task.notes, task.contact_id) == ("(erased)", None, None)
    published = json.dumps(outbox_events(db, "deal.created"))
    assert "Hopper" not in published and "Grace" not in published


def test_an_erasure_keeps_the_pipeline_figures(service_db):
    _, db = service_db
    person = str(uuid.uuid4())
    new_deal(db, contact_id=person)
    handle(db, make_event("contact.erased", {"id": person, "merged_ids": []}))
    with db.session() as session:
        before = session.execute(sa.select(DealTotal.count, DealTotal.amount_cents)).all()
        totals.rebuild(session)
        assert session.execute(sa.select(DealTotal.count, DealTotal.amount_cents)).all() == before
        assert before == [(1, 125000)]


def test_a_merged_contact_takes_over_the_duplicates_deals_leads_and_tasks(service_db):
    _, db = service_db
    survivor, duplicate = str(uuid.uuid4()), str(uuid.uuid4())
    deal_id = new_deal(db, contact_id=duplicate)
    lead_id = new_lead(db, contact_id=duplicate, status="converted")
    task_id = new_task(db, contact_id=duplicate)

    handle(db, make_event("contact.merged", {"id": survivor, "duplicate_id": duplicate}))

    with db.session() as session:
        assert session.get(Deal, deal_id).contact_id == survivor
        assert session.get(Lead, lead_id).contact_id == survivor
        assert session.get(Task, task_id).contact_id == survivor
    [(_, data)] = outbox_events(db, "deal.updated")
    assert data["contact_id"] == survivor and data["changed"] == ["contact_id"]


def test_a_merge_into_an_erased_contact_changes_nothing(service_db):
    _, db = service_db
    survivor, duplicate = str(uuid.uuid4()), str(uuid.uuid4())
    handle(db, make_event("contact.erased", {"id": survivor, "merged_ids": []}))
    deal_id = new_deal(db, contact_id=duplicate)
    handle(db, make_event("contact.merged", {"id": survivor, "duplicate_id": duplicate}))
    with db.session() as session:
        assert session.get(Deal, deal_id).contact_id == duplicate


def test_an_opened_email_earns_the_open_lead_behaviour_points(service_db):
    _, db = service_db
    lead_id = new_lead(db, email="Grace@Navy.mil")
    opened = make_event("email.opened", {"to": "grace@navy.mil", "message_id": "m1"})
    handle(db, opened)
    handle(db, make_event("email.clicked", {"lead_id": lead_id}))
    with db.session() as session:
        lead = session.get(Lead, lead_id)
        kinds = sorted(session.scalars(sa.select(LeadBehaviour.kind)))
        assert kinds == ["email_clicked", "email_opened"]
        assert lead.behaviour_points == 7 and lead.score == 7


def test_the_same_engagement_event_counts_once(service_db):
    _, db = service_db
    lead_id = new_lead(db, email="grace@navy.mil")
    clicked = make_event("email.clicked", {"email": "grace@navy.mil"})
    handle(db, clicked)
    handle(db, clicked)
    with db.session() as session:
        assert session.get(Lead, lead_id).behaviour_points == 5


def test_engagement_of_someone_with_no_open_lead_is_ignored(service_db):
    _, db = service_db
    new_lead(db, email="old@navy.mil", status="converted")
    handle(db, make_event("email.opened", {"to": "old@navy.mil"}))
    handle(db, make_event("email.opened", {"to": "nobody@example.com"}))
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(LeadBehaviour)) == 0


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("contact.merged", {"id": str(uuid.uuid4())}),
        ("contact.erased", {"id": str(uuid.uuid4()), "merged_ids": "not a list"}),
        ("email.opened", {"to": 42}),
    ],
)
def test_events_missing_what_they_need_are_permanent_failures(service_db, event_type, data):
    _, db = service_db
    with pytest.raises(PermanentError):
        handle(db, make_event(event_type, data))


@pytest.fixture
def running_worker(service_db):
    settings, db = service_db
    with consuming_worker(settings, db, handlers()):
        yield settings, db


def _behaviour_points(db, lead_id) -> int:
    with db.session() as session:
        return session.get(Lead, lead_id).behaviour_points


def test_a_click_delivered_twice_by_the_broker_counts_once(running_worker):
    settings, db = running_worker
    lead_id = new_lead(db, email="twice@navy.mil")
    clicked = make_event("email.clicked", {"to": "twice@navy.mil"})
    publish_raw(settings, "email.clicked", clicked.to_json().encode())
    publish_raw(settings, "email.clicked", clicked.to_json().encode())
    marker = make_event("email.opened", {"to": "twice@navy.mil"})
    publish_raw(settings, "email.opened", marker.to_json().encode())
    wait_until(lambda: _behaviour_points(db, lead_id) >= 7, 15, "for both events")
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(LeadBehaviour)) == 2
    assert _behaviour_points(db, lead_id) == 7


def test_a_poison_message_is_dead_lettered_and_the_consumer_goes_on(running_worker):
    settings, db = running_worker
    lead_id = new_lead(db, email="after@navy.mil")
    publish_raw(settings, "email.opened", b"\xff not json")
    publish_raw(settings, "contact.merged", json.dumps({"type": "contact.merged"}).encode())
    bad = make_event("contact.merged", {"id": str(uuid.uuid4())})
    publish_raw(settings, "contact.merged", bad.to_json().encode())
    good = make_event("email.opened", {"to": "after@navy.mil"})
    publish_raw(settings, "email.opened", good.to_json().encode())
    wait_until(lambda: _behaviour_points(db, lead_id) == 2, 15, "for the good event")
    wait_until(lambda: len(list_dead_letters(settings)) == 3, 15, "for three dead letters")
    reasons = sorted(letter.reason for letter in list_dead_letters(settings))
    assert reasons == ["malformed", "malformed", "permanent"]
