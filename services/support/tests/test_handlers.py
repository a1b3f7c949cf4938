"""The events support consumes: rules directly, delivery through the real broker."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from services.support import csat
from services.support.app import make_database
from services.support.handlers import handlers
from services.support.models import Comment, CsatRating, ErasedContact, Ticket
from shared.bus import PermanentError
from shared.deadletters import list_dead_letters, publish_raw
from shared.events import utcnow
from shared.outbox import record_event
from shared.testing import (
    consuming_worker,
    every_value,
    handle_event,
    make_event,
    outbox_events,
    wait_until,
)

AGENT_ID = "00000000-0000-4000-8000-000000000003"
# What the erased person said or was called: none of it may stay anywhere (case-sensitive,
# so lowercase hex in UUIDs cannot match by chance).
HER_DATA = ("Ada", "Lovelace", "ada@example.com", "Analytical Engine", "Bernoulli")


@pytest.fixture
def service_db(make_settings, database_url):
    settings = make_settings("support", database_url=database_url)
    db = make_database(settings)
    db.create_all()
    yield settings, db
    db.dispose()


def handle(db: Any, envelope: Any) -> None:
    handle_event(db, handlers(), envelope)


def new_ticket(db: Any, contact_id: str | None, status: str = "open", **fields: Any) -> str:
    with db.session() as session:
        ticket = Ticket(contact_id=contact_id, status=status, assignee_id=AGENT_ID, **fields)
        ticket.subject = fields.get("subject", "Help")
        session.add(ticket)
        session.flush()
        return ticket.id


def her_ticket(db: Any, contact_id: str, subject: str) -> str:
    """A ticket of Ada's as the tickets module leaves it: events, comments, a stored answer."""
    ticket_id = new_ticket(
        db,
        contact_id,
        status="resolved",
        subject=subject,
        description="Ada Lovelace: the Analytical Engine will not compute Bernoulli numbers",
        requester_email="ada@example.com",
        requester_name="Ada Lovelace",
        tags=["Lovelace estate"],
    )
    with db.session() as session:
        ticket = session.get(Ticket, ticket_id)
        view = {"id": ticket_id, "subject": subject, "requester_email": "ada@example.com"}
        record_event(session, "ticket.created", ticket_id, view)
        said = Comment(
            ticket_id=ticket_id, body="Ada here: Bernoulli again", author_kind="customer"
        )
        reply = Comment(ticket_id=ticket_id, body="Dear Ada Lovelace, fixed", author_id=AGENT_ID)
        session.add_all([said, reply])
        session.flush()
        record_event(session, "ticket.commented", ticket_id, {"body": said.body})
        record_event(session, "comment.created", reply.id, {"body": reply.body})
        _stored_answer(session, ticket_id, view)
        _stored_answer(session, reply.id, {"id": reply.id, "body": reply.body})
        csat.record_rating(session, ticket, 4, "Ada is pleased with the Analytical Engine")
    return ticket_id


def _stored_answer(session: Any, resource_id: str, body: dict[str, Any]) -> None:
    """An answer the Idempotency-Key machinery kept (it holds the record as sent)."""
    table = session.info["db"].idempotency
    session.execute(
        table.insert().values(
            scope=AGENT_ID,
            key=str(uuid.uuid4()),
            fingerprint="f" * 64,
            status=201,
            body=json.dumps(body),
            resource_id=resource_id,
            created_at=utcnow(),
        )
    )


# --- erasure --------------------------------------------------------------------------------


def test_an_erased_contact_leaves_no_personal_data_in_support(service_db):
    _, db = service_db
    ada, merged, grace = (str(uuid.uuid4()) for _ in range(3))
    first = her_ticket(db, ada, "Ada's engine is broken")
    second = her_ticket(db, merged, "Lovelace account locked")
    other = new_ticket(db, grace, subject="Grace's compiler", requester_name="Grace Hopper")
    assert any("Lovelace" in value for value in every_value(db))

    handle(db, make_event("contact.erased", {"id": ada, "merged_ids": [merged]}))

    leaks = [value for value in every_value(db) if any(word in value for word in HER_DATA)]
    assert leaks == []
    with db.session() as session:
        for ticket_id in (first, second):
            ticket = session.get(Ticket, ticket_id)
            assert (ticket.subject, ticket.description, ticket.contact_id) == (
                "(erased)",
                None,
                None,
            )
            assert (ticket.requester_email, ticket.requester_name, ticket.tags) == (None, None, [])
            assert (ticket.status, ticket.assignee_id, ticket.version) == ("resolved", AGENT_ID, 2)
            rating = session.get(CsatRating, ticket_id)
            assert (rating.rating, rating.comment, rating.assignee_id) == (4, None, AGENT_ID)
        assert session.scalar(sa.select(sa.func.count()).select_from(Comment)) == 0
        assert set(session.scalars(sa.select(ErasedContact.contact_id))) == {ada, merged}
        kept = session.get(Ticket, other)
        assert (kept.subject, kept.contact_id, kept.requester_name) == (
            "Grace's compiler",
            grace,
            "Grace Hopper",
        )
    # The events still go out (consumers learn they happened), naming no one.
    assert ("ticket.created", {"id": first, "redacted": True}) in outbox_events(db)
    rated = [data for _, data in outbox_events(db, "ticket.csat_recorded")]
    assert rated == [{"id": first, "redacted": True}, {"id": second, "redacted": True}]
    [(_, reply)] = outbox_events(db, "comment.created")[:1]
    assert set(reply) == {"id", "ticket_id", "redacted"} and reply["ticket_id"] == first


def test_erasing_twice_or_someone_without_tickets_is_harmless(service_db):
    _, db = service_db
    ada = str(uuid.uuid4())
    ticket_id = her_ticket(db, ada, "Ada's engine")
    erased = make_event("contact.erased", {"id": ada})
    handle(db, erased)
    handle(db, make_event("contact.erased", {"id": ada, "merged_ids": []}))
    handle(db, make_event("contact.erased", {"id": str(uuid.uuid4()), "merged_ids": []}))
    with db.session() as session:
        assert session.get(Ticket, ticket_id).version == 2
        assert session.scalar(sa.select(sa.func.count()).select_from(ErasedContact)) == 2


def test_an_erasure_names_the_person_by_the_aggregate_when_data_has_no_id(service_db):
    _, db = service_db
    ada = str(uuid.uuid4())
    ticket_id = new_ticket(db, ada, requester_name="Ada Lovelace")
    handle(db, make_event("contact.erased", {"merged_ids": []}, aggregate_id=ada))
    with db.session() as session:
        assert session.get(Ticket, ticket_id).requester_name is None


# --- merges ---------------------------------------------------------------------------------


def test_a_merged_contact_takes_over_the_duplicates_tickets(service_db):
    _, db = service_db
    survivor, duplicate, bystander = (str(uuid.uuid4()) for _ in range(3))
    moved = sorted([new_ticket(db, duplicate), new_ticket(db, duplicate, status="closed")])
    stays = new_ticket(db, bystander)

    handle(db, make_event("contact.merged", {"id": survivor, "duplicate_id": duplicate}))

    with db.session() as session:
        for ticket_id in moved:
            ticket = session.get(Ticket, ticket_id)
            assert (ticket.contact_id, ticket.version) == (survivor, 2)
        assert session.get(Ticket, stays).contact_id == bystander
    updates = sorted(outbox_events(db, "ticket.updated"), key=lambda event: event[1]["id"])
    assert [data["id"] for _, data in updates] == moved
    for _, data in updates:
        assert data["contact_id"] == survivor and data["changed"] == ["contact_id"]
        assert data["previous_contact_id"] == duplicate and data["version"] == 2


def test_a_merge_into_an_erased_contact_changes_nothing(service_db):
    _, db = service_db
    survivor, duplicate = str(uuid.uuid4()), str(uuid.uuid4())
    handle(db, make_event("contact.erased", {"id": survivor, "merged_ids": []}))
    ticket_id = new_ticket(db, duplicate)
    handle(db, make_event("contact.merged", {"id": survivor, "duplicate_id": duplicate}))
    with db.session() as session:
        assert session.get(Ticket, ticket_id).contact_id == duplicate
    assert outbox_events(db, "ticket.updated") == []


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("contact.merged", {"id": str(uuid.uuid4())}),
        ("contact.merged", {"duplicate_id": str(uuid.uuid4())}),
        ("contact.merged", {"id": str(uuid.uuid4()), "duplicate_id": None}),
        ("contact.merged", {"id": 42, "duplicate_id": str(uuid.uuid4())}),
        ("contact.erased", {"id": str(uuid.uuid4()), "merged_ids": "not a list"}),
        ("contact.erased", {"id": str(uuid.uuid4()), "merged_ids": [7]}),
        ("contact.erased", {"id": None}),
        ("contact.erased", {"id": "robert'); drop table tickets"}),
    ],
)
def test_events_missing_what_they_need_are_permanent_failures(service_db, event_type, data):
    _, db = service_db
    with pytest.raises(PermanentError):
        handle(db, make_event(event_type, data))


def test_an_erasure_without_any_id_is_a_permanent_failure(service_db):
    _, db = service_db
    with pytest.raises(PermanentError):
        handle(db, make_event("contact.erased", {}, aggregate_id="not-an-id"))


# --- through the real broker ----------------------------------------------------------------


@pytest.fixture
def running_worker(service_db):
    settings, db = service_db
    with consuming_worker(settings, db, handlers()):
        yield settings, db


def _contact_of(db: Any, ticket_id: str) -> str | None:
    with db.session() as session:
        return session.get(Ticket, ticket_id).contact_id


def test_a_merge_delivered_twice_by_the_broker_is_applied_once(running_worker):
    settings, db = running_worker
    survivor, duplicate = str(uuid.uuid4()), str(uuid.uuid4())
    first = new_ticket(db, duplicate)
    merged = make_event("contact.merged", {"id": survivor, "duplicate_id": duplicate})
    publish_raw(settings, "contact.merged", merged.to_json())
    wait_until(lambda: _contact_of(db, first) == survivor, 15, "for the merge")
    # A ticket of the duplicate arriving late: applying the event again would move it.
    late = new_ticket(db, duplicate)
    publish_raw(settings, "contact.merged", merged.to_json())
    marker_from, other = str(uuid.uuid4()), str(uuid.uuid4())
    marker_ticket = new_ticket(db, marker_from)
    marker = make_event("contact.merged", {"id": other, "duplicate_id": marker_from})
    publish_raw(settings, "contact.merged", marker.to_json())
    wait_until(lambda: _contact_of(db, marker_ticket) == other, 15, "for the marker")
    assert _contact_of(db, late) == duplicate
    assert len(outbox_events(db, "ticket.updated")) == 2  # the first ticket and the marker


def test_poison_messages_are_dead_lettered_and_the_consumer_goes_on(running_worker):
    settings, db = running_worker
    person = str(uuid.uuid4())
    ticket_id = new_ticket(db, person, requester_name="Ada Lovelace")
    publish_raw(settings, "contact.erased", b"\xff not json")
    publish_raw(settings, "contact.merged", json.dumps({"type": "contact.merged"}))
    missing = make_event("contact.merged", {"id": str(uuid.uuid4())})
    publish_raw(settings, "contact.merged", missing.to_json())
    not_a_list = make_event("contact.erased", {"id": str(uuid.uuid4()), "merged_ids": "x"})
    publish_raw(settings, "contact.erased", not_a_list.to_json())
    good = make_event("contact.erased", {"id": person, "merged_ids": []})
    publish_raw(settings, "contact.erased", good.to_json())

    wait_until(lambda: _contact_of(db, ticket_id) is None, 15, "for the good erasure")
    wait_until(lambda: len(list_dead_letters(settings)) == 4, 15, "for four dead letters")
    reasons = sorted(letter.reason for letter in list_dead_letters(settings))
    assert reasons == ["malformed", "malformed", "permanent", "permanent"]
    with db.session() as session:
        assert session.get(Ticket, ticket_id).requester_name is None
