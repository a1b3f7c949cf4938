"""Queueing mail: validation, idempotency by message id, consent, on both databases."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from services.notifications.models import Message, Suppression
from services.notifications.sending import derived_message_id, queue_message
from shared.testing import make_event, outbox_events, row_counts
from shared.web import ApiError

CONTACT = "00000000-0000-4000-8000-0000000000c1"
CAMPAIGN = "00000000-0000-4000-8000-0000000000ca"


def queue(db: Any, **fields: Any) -> Message:
    values: dict[str, Any] = {
        "message_id": None,
        "to": "ada@example.com",
        "subject": "Welcome",
        "body_text": "Hello Ada",
    }
    with db.session() as session:
        return queue_message(session, **{**values, **fields})


def messages(db: Any) -> list[Message]:
    with db.session() as session:
        return list(session.scalars(sa.select(Message).order_by(Message.created_at)))


def test_a_queued_message_waits_in_the_log_with_everything_it_needs(db, monkeypatch):
    monkeypatch.setenv("CRM_MAIL_FROM", "Acme CRM <crm@acme.example>")
    cause = make_event("ticket.created", {}, source="support")
    message = queue(
        db,
        message_id=str(uuid.uuid4()).upper(),
        to=" Ada@Example.com ",
        body_html="<p>Hello Ada</p>",
        contact_id=CONTACT,
        campaign_id=CAMPAIGN,
        cause=cause,
        headers={"Reply-To": "support@acme.example"},
    )
    [stored] = messages(db)
    assert stored.id == message.id == message.id.lower()
    assert (stored.to_address, stored.to_key) == ("Ada@Example.com", "ada@example.com")
    assert stored.from_address == "Acme CRM <crm@acme.example>"
    assert (stored.status, stored.attempts, stored.next_attempt_at) == ("queued", 0, None)
    assert (stored.category, stored.contact_id, stored.campaign_id) == (
        "transactional",
        CONTACT,
        CAMPAIGN,
    )
    assert (stored.cause_event_id, stored.cause_event_type) == (cause.id, "ticket.created")
    assert stored.body_html == "<p>Hello Ada</p>" and stored.headers == {
        "Reply-To": "support@acme.example"
    }
    assert outbox_events(db) == []  # nothing is said until it is sent (or fails)


def test_asking_again_for_a_message_id_returns_the_first_message(db):
    message_id = str(uuid.uuid4())
    first = queue(db, message_id=message_id, subject="First")
    again = queue(db, message_id=message_id, subject="Second", to="eve@example.com")
    assert again.id == first.id and again.subject == "First"
    assert row_counts(db, "messages") == {"messages": 1}


def test_without_an_id_the_requesting_event_and_the_recipient_name_the_message(db):
    cause = make_event("email.requested", {})
    first = queue(db, cause=cause, to="Ada@example.com")
    assert first.id == derived_message_id(cause, "ada@example.com")
    assert queue(db, cause=cause, to="ada@EXAMPLE.com").id == first.id
    other = queue(db, cause=cause, to="grace@example.com")
    assert other.id != first.id
    unrelated = queue(db)
    assert unrelated.id not in (first.id, other.id)
    assert row_counts(db, "messages") == {"messages": 3}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"to": "not-an-address"}, "to"),
        ({"to": "ada@example.com, eve@example.com"}, "to"),
        ({"to": "ada@example.com\r\nBcc: eve@example.com"}, "to"),
        ({"to": None}, "to"),
        ({"subject": "Hi\r\nBcc: eve@example.com"}, "subject"),
        ({"subject": "   "}, "subject"),
        ({"subject": "x" * 1001}, "subject"),
        ({"body_text": "nul \x00 inside"}, "body_text"),
        ({"body_text": "", "body_html": " "}, "body_text"),
        ({"body_html": 42}, "body_html"),
        ({"category": "newsletter"}, "category"),
        ({"contact_id": "42"}, "contact_id"),
        ({"campaign_id": "robert'); drop table messages"}, "campaign_id"),
        ({"template_id": "x" * 40}, "template_id"),
        ({"headers": {"Bcc": "eve@example.com"}}, "headers"),
        ({"headers": {"X-Tag": "a\nBcc: eve@example.com"}}, "headers"),
        ({"headers": {"X-A": "1", "x-a": "2"}}, "headers"),
        ({"headers": {f"X-{n}": "v" for n in range(21)}}, "headers"),
        ({"headers": ["X-A: 1"]}, "headers"),
        ({"message_id": "msg-1"}, "message_id"),
    ],
)
def test_invalid_mail_is_refused_with_a_422_naming_the_field(db, fields, field):
    with pytest.raises(ApiError) as refused:
        queue(db, **fields)
    assert refused.value.status == 422 and field in (refused.value.errors or {})
    assert row_counts(db, "messages", "outbox") == {"messages": 0, "outbox": 0}


def test_several_bad_fields_are_named_at_once(db):
    with pytest.raises(ApiError) as refused:
        queue(db, to="nope", subject="", contact_id="x")
    assert set(refused.value.errors or {}) == {"to", "subject", "contact_id"}


def suppress(db: Any, address: str, reason: str) -> None:
    with db.session() as session:
        session.add(Suppression(email_key=address, reason=reason))


def test_marketing_mail_to_a_suppressed_address_is_logged_as_failed_and_never_queued(db):
    suppress(db, "ada@example.com", "unsubscribed")
    message = queue(db, to="ADA@example.com", category="marketing", campaign_id=CAMPAIGN)
    assert message.status == "failed" and message.last_error == "suppressed: unsubscribed"
    assert message.failed_at is not None and message.attempts == 0
    [(kind, data)] = outbox_events(db)
    assert kind == "email.failed"
    assert data["message_id"] == message.id and data["reason"] == "suppressed"
    assert data["to"] == "ADA@example.com" and data["campaign_id"] == CAMPAIGN
    assert data["category"] == "marketing" and data["status"] == "failed"


def test_transactional_mail_still_reaches_a_suppressed_address(db):
    suppress(db, "ada@example.com", "unsubscribed")
    assert queue(db, category="transactional").status == "queued"
    assert outbox_events(db) == []


def test_marketing_mail_with_an_unsubscribe_link_offers_one_click_unsubscribe(db):
    link = {"List-Unsubscribe": "<https://crm.example.com/u/t0k>, <mailto:u@crm.example.com>"}
    marketing = queue(db, category="marketing", headers=link)
    assert marketing.headers == {**link, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    mail_only = {"List-Unsubscribe": "<mailto:u@crm.example.com>"}
    assert queue(db, category="marketing", headers=mail_only).headers == mail_only
    assert queue(db, headers=link).headers == link  # transactional: as given
