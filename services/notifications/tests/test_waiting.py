"""Events that need a contact not known yet wait for it: no customer email is lost to a race."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from services.notifications import notices, waiting
from services.notifications.app import make_database
from services.notifications.handlers import handlers
from services.notifications.models import ContactAddress, Message, PendingEvent
from shared.deadletters import publish_raw
from shared.events import utcnow
from shared.testing import (
    handle_event,
    make_event,
    service_worker_on_new_database,
    wait_until,
)

CONTACT = "00000000-0000-4000-8000-0000000000c2"


def ticket_event(event_type: str = "ticket.created", **fields: Any) -> Any:
    """A ticket for a contact, as support publishes it: a contact_id, no requester address."""
    ticket_id = str(uuid.uuid4())
    data = {
        "id": ticket_id,
        "ticket_id": ticket_id,
        "contact_id": CONTACT,
        "requester_email": None,
        "subject": "Printer on fire",
        "status": "new",
        **fields,
    }
    return make_event(event_type, data, "support", aggregate_id=ticket_id, aggregate_version=1)


def contact_event(version: int = 1, email: str | None = "ada@example.com", **fields: Any) -> Any:
    data = {"id": CONTACT, "email": email, "first_name": "Ada", "last_name": "Lovelace", **fields}
    event_type = "contact.created" if version == 1 else "contact.updated"
    return make_event(event_type, data, "contacts", aggregate_id=CONTACT, aggregate_version=version)


def messages(db: Any) -> list[Message]:
    with db.session() as session:
        found = list(session.scalars(sa.select(Message).order_by(Message.created_at)))
        session.expunge_all()
        return found


def pending(db: Any) -> list[str]:
    with db.session() as session:
        return list(session.scalars(sa.select(PendingEvent.event_id)))


@pytest.fixture
def apply(app: Any, db: Any) -> Any:
    table = handlers(app.extensions["crm.settings"])

    def apply_event(event: Any) -> Any:
        handle_event(db, table, event)
        return event

    return apply_event


def test_an_acknowledgement_waits_for_the_contact_and_is_sent_once(apply, db):
    ticket = apply(ticket_event())
    assert messages(db) == [] and pending(db) == [ticket.id]
    apply(contact_event())
    [message] = messages(db)
    assert message.id == notices.notice_message_id(ticket, notices.ACKNOWLEDGEMENT)
    assert message.to_address == "ada@example.com" and "Hello Ada Lovelace" in message.body_text
    assert pending(db) == []
    apply(contact_event(version=2))  # later news of the contact: nothing more to send
    apply(ticket)  # the ticket event again: the same message
    assert len(messages(db)) == 1


def test_a_csat_request_waits_for_the_contact_too(apply, db):
    resolved = apply(ticket_event("ticket.resolved", status="resolved", csat_token="tok.en"))
    assert pending(db) == [resolved.id]
    apply(contact_event())
    [message] = messages(db)
    assert message.id == notices.notice_message_id(resolved, notices.CSAT_REQUEST)
    assert "/api/v1/csat/tok.en" in message.body_text


def test_an_email_request_to_a_contact_not_known_yet_waits_instead_of_dead_lettering(apply, db):
    asked = make_event(
        "email.requested", {"contact_id": CONTACT, "subject": "Hi", "body_text": "x"}
    )
    apply(asked)
    assert pending(db) == [asked.id]
    apply(contact_event())
    assert [m.to_address for m in messages(db)] == ["ada@example.com"]


def test_a_known_contact_without_an_address_does_not_wait(apply, db):
    apply(contact_event(email=None))
    apply(ticket_event())
    assert messages(db) == [] and pending(db) == []


def test_an_erased_contacts_waiting_events_go_with_them(apply, db):
    apply(ticket_event())
    erased = make_event("contact.erased", {"id": CONTACT}, "contacts", aggregate_id=CONTACT)
    apply(erased)
    assert pending(db) == []


def test_an_event_that_waited_too_long_is_dropped(apply, db):
    ticket = apply(ticket_event())
    with db.session() as session:
        row = session.get(PendingEvent, ticket.id)
        row.created_at = utcnow() - waiting.MAX_WAIT - timedelta(minutes=1)
    apply(contact_event())
    assert messages(db) == [] and pending(db) == []


AGENT = "00000000-0000-4000-8000-0000000000a7"


def user_event(event_type: str, version: int = 1) -> Any:
    data = {"id": AGENT, "email": "sam@example.com", "name": "Sam", "active": True}
    if event_type == "user.deleted":
        data = {"id": AGENT}
    return make_event(event_type, data, "gateway", aggregate_id=AGENT, aggregate_version=version)


def test_an_assignment_to_a_user_not_known_yet_is_told_when_they_arrive(apply, db):
    assigned = apply(ticket_event("ticket.assigned", assignee_id=AGENT))
    assert messages(db) == [] and pending(db) == [assigned.id]
    apply(user_event("user.created"))
    [message] = messages(db)
    assert message.to_address == "sam@example.com" and pending(db) == []
    apply(user_event("user.updated", version=2))
    assert len(messages(db)) == 1


def test_a_deleted_users_waiting_events_go_with_them(apply, db):
    apply(ticket_event("ticket.assigned", assignee_id=AGENT))
    apply(user_event("user.deleted", version=2))
    assert pending(db) == [] and messages(db) == []


# --- through the real broker ----------------------------------------------------------------


@pytest.fixture
def running_worker(make_settings, database_url) -> Iterator[tuple[Any, Any]]:
    """The notifications consumer as deployed (every handler) on a real queue."""
    settings = make_settings("notifications", database_url=database_url)
    with service_worker_on_new_database(settings, make_database, handlers) as running:
        yield running


def test_ticket_created_before_contact_created_still_acknowledges_once(running_worker):
    settings, db = running_worker
    ticket = ticket_event()
    publish_raw(settings, "ticket.created", ticket.to_json())
    wait_until(lambda: pending(db) == [ticket.id], 15, "for the ticket to wait for its contact")
    with db.session() as session:
        assert session.get(ContactAddress, CONTACT) is None  # the wrong order, for sure
    publish_raw(settings, "contact.created", contact_event().to_json())
    wait_until(lambda: len(messages(db)) == 1, 15, "for the acknowledgement")
    publish_raw(settings, "contact.updated", contact_event(version=2).to_json())
    publish_raw(settings, "ticket.created", ticket.to_json())  # redelivered
    marker = ticket_event(requester_email="marker@example.com")
    publish_raw(settings, "ticket.created", marker.to_json())
    wait_until(lambda: len(messages(db)) == 2, 15, "for the marker's acknowledgement")
    addresses = sorted(message.to_address for message in messages(db))
    assert addresses == ["ada@example.com", "marker@example.com"] and pending(db) == []
