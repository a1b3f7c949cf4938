"""The events the contacts service consumes: rules directly, delivery through the real broker."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from services.contacts import handlers as contact_handlers
from services.contacts.app import make_database
from services.contacts.models import Contact, ContactMerge, Interaction
from shared.bus import PermanentError
from shared.deadletters import list_dead_letters, publish_raw
from shared.events import Envelope
from shared.testing import handle_event, make_event, wait_until
from shared.worker import ServiceWorker


def event(event_type: str, data: dict, **fields) -> Envelope:
    return make_event(event_type, data, source="sales", **fields)


@pytest.fixture
def service_db(make_settings, database_url):
    settings = make_settings("contacts", database_url=database_url)
    db = make_database(settings)
    db.create_all()
    yield settings, db
    db.dispose()


def handle(db, envelope: Envelope) -> None:
    handle_event(db, contact_handlers.handlers(), envelope)


def outbox_types(db) -> list[str]:
    with db.engine.connect() as connection:
        return list(connection.execute(sa.select(db.outbox.c.event_type)).scalars())


def new_contact(db, **fields) -> str:
    from services.contacts import domain

    with db.session() as session:
        return domain.create_contact(session, {"first_name": "Ann", **fields}).id


def test_a_converted_lead_becomes_a_contact_under_the_id_sales_named(service_db):
    _, db = service_db
    contact_id = str(uuid.uuid4())
    data = {
        "contact_id": contact_id,
        "lead_id": str(uuid.uuid4()),
        "email": "new@lead.io",
        "first_name": "Lea",
    }
    handle(db, event("lead.converted", data))
    with db.session() as session:
        contact = session.get(Contact, contact_id)
        assert contact.email == "new@lead.io" and contact.lifecycle_stage == "opportunity"
    assert "contact.created" in outbox_types(db)


def test_a_converted_lead_with_a_known_email_links_the_existing_contact(service_db):
    _, db = service_db
    existing = new_contact(db, email="known@example.com")
    proposed = str(uuid.uuid4())
    handle(db, event("lead.converted", {"contact_id": proposed, "email": "KNOWN@example.com"}))
    with db.session() as session:
        assert session.get(Contact, proposed) is None
        assert session.get(ContactMerge, proposed).contact_id == existing
    assert "contact.merged" in outbox_types(db)


def test_a_ticket_from_an_unknown_address_makes_the_contact_support_named(service_db):
    _, db = service_db
    contact_id = str(uuid.uuid4())
    data = {
        "contact_id": contact_id,
        "ticket_id": "t1",
        "subject": "Printer on fire",
        "requester": {"email": "new@customer.io", "name": "Ada Byron King"},
    }
    handle(db, make_event("ticket.created", data, source="support"))
    with db.session() as session:
        contact = session.get(Contact, contact_id)
        assert (contact.email, contact.first_name, contact.last_name) == (
            "new@customer.io",
            "Ada",
            "Byron King",
        )
        [entry] = session.scalars(
            sa.select(Interaction).where(Interaction.contact_id == contact_id)
        )
        assert entry.subject == "Printer on fire"


def test_a_ticket_from_a_known_address_links_the_existing_contact(service_db):
    _, db = service_db
    existing = new_contact(db, email="known@customer.io")
    named = str(uuid.uuid4())
    data = {"contact_id": named, "subject": "Hi", "requester": {"email": "Known@customer.io"}}
    handle(db, make_event("ticket.created", data, source="support"))
    with db.session() as session:
        assert session.get(Contact, named) is None
        assert session.get(ContactMerge, named).contact_id == existing
        assert (
            session.scalar(sa.select(sa.func.count()).where(Interaction.contact_id == existing))
            == 1
        )
    assert "contact.merged" in outbox_types(db)


def test_a_won_deal_makes_a_customer_and_adds_lifetime_value(service_db):
    _, db = service_db
    contact_id = new_contact(db)
    handle(
        db,
        event(
            "deal.won",
            {"contact_id": contact_id, "deal_id": "d1", "amount": "1250.50", "currency": "EUR"},
        ),
    )
    with db.session() as session:
        contact = session.get(Contact, contact_id)
        assert contact.lifetime_value == Decimal("1250.50")
        assert contact.lifecycle_stage == "customer"
        assert contact.last_activity_at is not None
        [entry] = session.scalars(
            sa.select(Interaction).where(Interaction.contact_id == contact_id)
        )
        assert entry.event_type == "deal.won" and entry.data["deal_id"] == "d1"


def test_other_services_events_land_on_the_timeline(service_db):
    _, db = service_db
    contact_id = new_contact(db)
    handle(
        db,
        event("ticket.created", {"contact_id": contact_id, "ticket_id": "t1", "subject": "Broken"}),
    )
    with db.session() as session:
        [entry] = session.scalars(
            sa.select(Interaction).where(Interaction.contact_id == contact_id)
        )
        assert entry.subject == "Broken" and entry.source == "sales"


def test_events_about_an_erased_person_are_ignored(service_db):
    _, db = service_db
    from services.contacts import privacy

    contact_id = new_contact(db, email="gone@example.com")
    with db.session() as session:
        privacy.erase_contact(session, session.get(Contact, contact_id))
    handle(db, event("deal.won", {"contact_id": contact_id, "amount": "5"}))
    handle(db, event("lead.converted", {"contact_id": contact_id, "email": "gone@example.com"}))
    with db.session() as session:
        assert session.get(Contact, contact_id) is None


# Events about no contact, as their producers publish them: a deal or a task on no
# contact, mail to a staff address.
NO_CONTACT_EVENTS = [
    ("sales", "deal.won", {"id": "d1", "name": "Renewal", "contact_id": None, "amount": "5"}),
    ("sales", "deal.created", {"id": "d2", "name": "New", "amount": "9"}),
    ("sales", "task.completed", {"id": "t1", "title": "Call", "contact_id": None}),
    ("notifications", "email.sent", {"to": "staff@our-crm.io", "contact_id": None}),
]


@pytest.mark.parametrize(("source", "event_type", "data"), NO_CONTACT_EVENTS)
def test_an_event_about_no_contact_is_applied_as_a_no_op(service_db, source, event_type, data):
    _, db = service_db
    handle(db, make_event(event_type, data, source=source))
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Interaction)) == 0
    assert outbox_types(db) == []


@pytest.mark.parametrize("contact_id", [42, "", ["x"]])
def test_an_event_whose_contact_id_is_no_id_is_a_permanent_failure(service_db, contact_id):
    _, db = service_db
    with pytest.raises(PermanentError):
        handle(db, event("deal.won", {"contact_id": contact_id, "amount": "5"}))


def test_a_tag_request_for_no_contact_is_a_permanent_failure(service_db):
    _, db = service_db
    with pytest.raises(PermanentError):
        handle(db, make_event("contact.tag_requested", {"tags": ["vip"]}, source="marketing"))


def wait_for(predicate, timeout=15.0):
    wait_until(predicate, timeout)
    return True


@pytest.fixture
def running_worker(service_db):
    settings, db = service_db
    worker = ServiceWorker(settings, db, contact_handlers.handlers())
    thread = worker.start()
    # Consuming means the queue and every binding are declared: nothing published now is lost.
    assert wait_for(worker.consumer.consuming.is_set), "the worker never started consuming"
    yield settings, db
    worker.stop()
    thread.join(timeout=15)


def lifetime_value(db, contact_id) -> Decimal:
    with db.session() as session:
        return session.get(Contact, contact_id).lifetime_value


def test_a_won_deal_delivered_twice_raises_lifetime_value_once(running_worker):
    settings, db = running_worker
    contact_id = new_contact(db)
    won = event("deal.won", {"contact_id": contact_id, "amount": "100.00", "currency": "EUR"})
    publish_raw(settings, "deal.won", won.to_json().encode())
    publish_raw(settings, "deal.won", won.to_json().encode())
    marker = make_event(
        "ticket.created", {"contact_id": contact_id, "subject": "after"}, source="support"
    )
    publish_raw(settings, "ticket.created", marker.to_json().encode())
    assert wait_for(lambda: _timeline_subjects(db, contact_id) >= {"after"})
    assert lifetime_value(db, contact_id) == Decimal("100.00")


def _timeline_subjects(db, contact_id) -> set[str]:
    with db.session() as session:
        return set(
            session.scalars(
                sa.select(Interaction.subject).where(Interaction.contact_id == contact_id)
            )
        )


def test_a_poison_message_is_dead_lettered_and_the_consumer_goes_on(running_worker):
    settings, db = running_worker
    contact_id = new_contact(db)
    publish_raw(settings, "deal.won", b"{this is not json")
    publish_raw(settings, "deal.won", json.dumps({"type": "deal.won"}).encode())
    not_an_id = event("deal.won", {"contact_id": 1, "amount": "1"})
    publish_raw(settings, "deal.won", not_an_id.to_json().encode())
    good = event("deal.won", {"contact_id": contact_id, "amount": "7.00"})
    publish_raw(settings, "deal.won", good.to_json().encode())
    assert wait_for(lambda: lifetime_value(db, contact_id) == Decimal("7.00"))
    assert wait_for(lambda: len(list_dead_letters(settings)) == 3)
    reasons = sorted(letter.reason for letter in list_dead_letters(settings))
    assert reasons == ["malformed", "malformed", "permanent"]


def test_events_about_no_contact_are_acknowledged_never_dead_lettered(running_worker):
    settings, db = running_worker
    contact_id = new_contact(db)
    for source, event_type, data in NO_CONTACT_EVENTS:
        envelope = make_event(event_type, data, source=source)
        publish_raw(settings, event_type, envelope.to_json().encode())
    marker = make_event("deal.won", {"contact_id": contact_id, "amount": "3.00"}, source="sales")
    publish_raw(settings, "deal.won", marker.to_json().encode())
    assert wait_for(lambda: lifetime_value(db, contact_id) == Decimal("3.00"))
    assert list_dead_letters(settings) == []
    assert _timeline_subjects(db, contact_id) == {"Deal won"}


def test_no_ticket_comment_becomes_a_timeline_entry():
    """The timeline is every role's: a comment event (an internal note's above all) stays
    off it, so no note, nor the fact of one, reaches roles that may not read it."""
    from services.contacts.timeline import TIMELINE_EVENTS

    assert "ticket.commented" not in contact_handlers.handlers()
    assert "ticket.commented" not in TIMELINE_EVENTS
