"""Notices on support events: one queued message per event, from a stored or built-in text."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from services.notifications import notices
from services.notifications.models import ContactAddress, Message, Template
from shared.testing import handle_event, make_event

CONTACT = "00000000-0000-4000-8000-0000000000c1"
PUBLIC = "https://crm.example.com"


@pytest.fixture
def apply(app: Any, db: Any) -> Any:
    base = app.extensions["crm.settings"]
    settings = base.with_overrides(extra={**base.extra, "public_url": PUBLIC + "/"})
    handlers = notices.handlers(settings)

    def apply_event(event: Any, times: int = 1) -> Any:
        for _ in range(times):
            handle_event(db, handlers, event)
        return event

    return apply_event


def ticket_event(event_type: str, **fields: Any) -> Any:
    """A ticket event as the support service writes it (the ticket view plus extras)."""
    ticket_id = str(uuid.uuid4())
    data = {
        "id": ticket_id,
        "ticket_id": ticket_id,
        "contact_id": CONTACT,
        "requester_email": None,
        "requester_name": None,
        "subject": "Printer <on fire>",
        "status": "new",
        "priority": "high",
        "channel": "email",
        "assignee_id": None,
        **fields,
    }
    return make_event(event_type, data, "support", aggregate_id=ticket_id, aggregate_version=1)


def messages(db: Any) -> list[Message]:
    with db.session() as session:
        found = list(session.scalars(sa.select(Message).order_by(Message.created_at)))
        session.expunge_all()
        return found


def add_contact(db: Any, email: str = "ada@example.com", name: str = "Ada") -> None:
    with db.session() as session:
        session.add(ContactAddress(contact_id=CONTACT, email=email, name=name, version=1))


def add_template(db: Any, name: str, **fields: Any) -> str:
    template_id = str(uuid.uuid4())
    values = {"subject": "Custom {{ ticket.subject }}", "body_text": "Custom", "body_html": None}
    with db.session() as session:
        session.add(Template(id=template_id, name=name, **{**values, **fields}))
    return template_id


def test_a_new_ticket_is_acknowledged_to_its_requester_once(apply, db):
    requester = {"email": "grace@example.com", "name": "Grace"}
    event = apply(ticket_event("ticket.created", requester=requester), times=2)
    [message] = messages(db)
    assert message.id == notices.notice_message_id(event, notices.ACKNOWLEDGEMENT)
    assert message.to_address == "grace@example.com" and message.category == "transactional"
    assert message.subject.startswith("We received your request: Printer <on fire> [#")
    assert "Hello Grace" in message.body_text and "Printer <on fire>" in message.body_text
    assert "Printer &lt;on fire&gt;" in message.body_html
    assert message.contact_id == CONTACT and message.template_id is None
    assert (message.cause_event_id, message.cause_event_type) == (event.id, "ticket.created")


def test_without_a_requester_the_contacts_address_is_used(apply, db):
    add_contact(db)
    apply(ticket_event("ticket.created"))
    [message] = messages(db)
    assert message.to_address == "ada@example.com" and "Hello Ada" in message.body_text


def test_the_requester_email_of_the_ticket_view_is_used_too(apply, db):
    apply(ticket_event("ticket.created", requester_email="lin@example.com"))
    assert [m.to_address for m in messages(db)] == ["lin@example.com"]


def test_no_known_address_means_no_acknowledgement(apply, db):
    apply(ticket_event("ticket.created"))
    apply(ticket_event("ticket.created", contact_id="not-a-uuid"))
    assert messages(db) == []


def test_an_address_the_sender_refuses_is_skipped_not_retried(apply, db):
    apply(ticket_event("ticket.created", requester={"email": "no-at-sign", "name": "X"}))
    apply(ticket_event("ticket.created", requester_email="a@b.example\r\nBcc: x@y.example"))
    assert messages(db) == []


def test_a_stored_template_overrides_the_built_in_text(apply, db):
    add_contact(db)
    template_id = add_template(db, "ticket_acknowledgement", category="marketing")
    apply(ticket_event("ticket.created"))
    [message] = messages(db)
    assert message.subject == "Custom Printer <on fire>" and message.body_text == "Custom"
    assert message.template_id == template_id and message.category == "transactional"


def test_a_stored_template_that_fails_falls_back_to_the_built_in(apply, db):
    add_contact(db)
    add_template(db, "ticket_acknowledgement", body_text="{{ no_such_variable }}")
    apply(ticket_event("ticket.created"))
    [message] = messages(db)
    assert message.subject.startswith("We received your request") and message.template_id is None


def test_a_resolved_ticket_gets_a_csat_request_with_its_rating_link(apply, db):
    add_contact(db)
    event = apply(ticket_event("ticket.resolved", status="resolved", csat_token="abc.DEF-1_x"), 2)
    [message] = messages(db)
    link = f"{PUBLIC}/api/v1/csat/abc.DEF-1_x"
    assert message.id == notices.notice_message_id(event, notices.CSAT_REQUEST)
    assert link in message.body_text and f'href="{link}"' in message.body_html
    assert message.subject.startswith("How did we do?")
    assert message.to_address == "ada@example.com" and message.category == "transactional"


def test_a_csat_request_offers_each_score_as_its_own_link(apply, db):
    add_contact(db)
    apply(ticket_event("ticket.resolved", status="resolved", csat_token="tok"), 2)
    [message] = messages(db)
    scores = [f"{PUBLIC}/api/v1/csat/tok?rating={n}" for n in range(1, 6)]
    assert re.findall(r'href="([^"]+\?rating=\d)"', message.body_html) == scores
    assert re.findall(r"(http\S+\?rating=\d)", message.body_text) == scores
    assert "1 - Very poor" in message.body_text and ">5 - Excellent</a>" in message.body_html


def test_a_csat_template_can_use_the_link(apply, db):
    add_contact(db)
    add_template(db, "ticket_csat_request", body_text="Rate: {{ csat_url }}")
    apply(ticket_event("ticket.resolved", csat_token="tok"))
    assert messages(db)[0].body_text == f"Rate: {PUBLIC}/api/v1/csat/tok"


def test_no_rating_link_means_no_csat_request(apply, db):
    add_contact(db)
    apply(ticket_event("ticket.resolved", csat_token=None))
    apply(ticket_event("ticket.resolved"))
    assert messages(db) == []


def test_each_event_is_its_own_message(apply, db):
    add_contact(db)
    apply(ticket_event("ticket.created"))
    apply(ticket_event("ticket.created"))
    assert len({message.id for message in messages(db)}) == 2


def test_every_notice_event_has_a_handler(app):
    handlers = notices.handlers(app.extensions["crm.settings"])
    assert set(handlers) == {"ticket.created", "ticket.resolved"}
