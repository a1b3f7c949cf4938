"""Queueing an email: the one way any part of the service asks for a message to be sent.

`queue_message` validates, applies consent and writes the message into the delivery log as
`queued`, with the links of its HTML (the only targets of its click tracking); the
worker's sender (services/notifications/sender.py) delivers it later. It is idempotent
by message id: asking again for a message that exists returns it, so a request delivered
twice never becomes two emails. The email.* events about a message are built here
too, so the sender and the queue describe a message the same way.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from services.notifications.html_links import links_in
from services.notifications.mime import address_problem, header_problem, sender_problem
from services.notifications.models import CATEGORIES, Message, TrackedLink, tracked_link_id
from services.notifications.suppressions import is_suppressed
from shared.config import load_settings
from shared.events import Envelope, utcnow
from shared.outbox import outbox_row, record_event
from shared.web import invalid

SERVICE = "notifications"
# Message ids derived from a requesting event: uuid5(this namespace, "<event id>:<address>").
MESSAGE_NAMESPACE = uuid.UUID("3f0c2a4e-6f55-4c3e-9a61-0d7f1b5e2c11")
MAX_SUBJECT = 1000
MAX_BODY = 1_000_000
MAX_HEADERS = 20
ONE_CLICK = ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
HTTP_URI = re.compile(r"<https?://", re.IGNORECASE)


def derived_message_id(cause: Envelope, to: str) -> str:
    """The id of the message an event asks for: the same event and address, the same id."""
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{cause.id}:{to.strip().lower()}"))


def default_sender() -> str:
    """The configured `From` (`CRM_MAIL_FROM`)."""
    return load_settings(SERVICE).extra["mail_from"]


def queue_message(
    session: Session,
    *,
    message_id: str | None,
    to: str,
    subject: str,
    body_text: str,
    body_html: str | None = None,
    category: str = "transactional",
    contact_id: str | None = None,
    campaign_id: str | None = None,
    template_id: str | None = None,
    cause: Envelope | None = None,
    headers: Mapping[str, str] | None = None,
    from_address: str | None = None,
) -> Message:
    """Queue one email for the sender; the existing message if `message_id` is known already.

    Without a `message_id`, a `cause` (the requesting event) names it: uuid5 of the event id
    and the recipient. Invalid input raises a 422 ApiError (handlers turn it into a
    PermanentError). Marketing mail to a suppressed address is logged as `failed`
    ("suppressed: <reason>") with `email.failed`, and never sent.
    """
    to = to.strip() if isinstance(to, str) else to
    ident = _message_id(message_id, cause, to)
    existing = session.get(Message, ident)
    if existing is not None:
        return existing
    ids = _check(
        to,
        subject,
        body_text,
        body_html,
        category,
        headers,
        from_address,
        contact_id=contact_id,
        campaign_id=campaign_id,
        template_id=template_id,
    )
    message = Message(
        id=ident,
        to_address=to,
        to_key=to.lower(),
        from_address=from_address or default_sender(),
        subject=subject,
        body_text=body_text,
        body_html=body_html,
        category=category,
        cause_event_id=cause.id if cause else None,
        cause_event_type=cause.type if cause else None,
        headers=_with_one_click(category, dict(headers or {})),
        **ids,  # contact_id, campaign_id, template_id as canonical UUIDs
    )
    session.add(message)
    _apply_consent(session, message)
    session.flush()
    if message.status == "queued":
        record_links(session, message)
    return message


def record_links(session: Session, message: Message) -> int:
    """Store the links of a message's HTML as its tracked links (the only places its click
    redirect may lead, `tracking`); how many."""
    now = utcnow()
    rows = [
        {"id": tracked_link_id(message.id, url), "message_id": message.id, "url": url}
        for url in links_in(message.body_html)
    ]
    if rows:
        session.execute(insert(TrackedLink), [{**row, "created_at": now} for row in rows])
    return len(rows)


def _message_id(message_id: str | None, cause: Envelope | None, to: Any) -> str:
    if message_id is None:
        if cause is None:
            return str(uuid.uuid4())
        if not isinstance(to, str):
            raise invalid({"to": ["Give an email address."]})
        return derived_message_id(cause, to)
    ids, errors = _canonical_ids({"message_id": message_id})
    if errors:
        raise invalid(errors)
    return ids["message_id"]  # type: ignore[return-value]


def _canonical_ids(values: Mapping[str, Any]) -> tuple[dict[str, str | None], dict[str, Any]]:
    """Canonical UUID strings (None stays None), and an error for each one that is not."""
    ids: dict[str, str | None] = {}
    errors: dict[str, Any] = {}
    for name, value in values.items():
        try:
            ids[name] = None if value is None else str(uuid.UUID(str(value)))
        except ValueError:
            errors[name] = ["Not a valid UUID."]
    return ids, errors


def _text_problem(value: Any, limit: int, *, one_line: bool = False) -> str | None:
    if not isinstance(value, str):
        return "Give a text."
    if len(value) > limit:
        return f"Longer than {limit} characters."
    if "\x00" in value:
        return "Text cannot contain NUL (\\u0000) characters."
    if one_line and ("\r" in value or "\n" in value):
        return "Cannot contain line breaks."
    return None


def _content_problems(
    to: Any, subject: Any, body_text: Any, body_html: Any, category: Any, headers: Any
) -> dict[str, str | None]:
    subject_problem = _text_problem(subject, MAX_SUBJECT, one_line=True)
    if subject_problem is None and not subject.strip():
        subject_problem = "Cannot be blank."
    body_problem = _text_problem(body_text, MAX_BODY)
    html_problem = None if body_html is None else _text_problem(body_html, MAX_BODY)
    if body_problem is None and html_problem is None:
        if not (body_text.strip() or (body_html or "").strip()):
            body_problem = "Give a text body or an HTML body."
    return {
        "to": address_problem(to),
        "subject": subject_problem,
        "body_text": body_problem,
        "body_html": html_problem,
        "category": None if category in CATEGORIES else f"Choose from {', '.join(CATEGORIES)}.",
        "headers": _headers_problem(headers),
    }


def _check(
    to: Any,
    subject: Any,
    body_text: Any,
    body_html: Any,
    category: Any,
    headers: Any,
    from_address: Any,
    **references: Any,
) -> dict[str, str | None]:
    """Validate a message's fields (one 422 naming every bad one); its canonical ids."""
    problems = _content_problems(to, subject, body_text, body_html, category, headers)
    problems["from_address"] = None if from_address is None else sender_problem(from_address)
    errors: dict[str, Any] = {name: [problem] for name, problem in problems.items() if problem}
    ids, id_errors = _canonical_ids(references)
    errors.update(id_errors)
    if errors:
        raise invalid(errors)
    return ids


def _headers_problem(headers: Any) -> str | None:
    if headers is None:
        return None
    if not isinstance(headers, Mapping) or len(headers) > MAX_HEADERS:
        return f"Give at most {MAX_HEADERS} headers as an object of names and texts."
    problems = [header_problem(name, value) for name, value in headers.items()]
    if len({str(name).lower() for name in headers}) < len(headers):
        problems.append("A header is given twice.")
    return next((problem for problem in problems if problem), None)


def _with_one_click(category: str, headers: dict[str, str]) -> dict[str, str]:
    """Marketing mail with an https unsubscribe link offers one-click unsubscribe (RFC 8058)."""
    names = {name.lower(): name for name in headers}
    unsubscribe = headers.get(names.get("list-unsubscribe", ""), "")
    offers_link = bool(HTTP_URI.search(unsubscribe))
    if category == "marketing" and offers_link and ONE_CLICK[0].lower() not in names:
        headers[ONE_CLICK[0]] = ONE_CLICK[1]
    return headers


def _apply_consent(session: Session, message: Message) -> None:
    """Marketing mail never goes to a suppressed address: it is logged as failed instead."""
    if message.category != "marketing":
        return
    reason = is_suppressed(session, message.to_key)
    if reason is None:
        return
    now = utcnow()
    message.status = "failed"
    message.failed_at = message.updated_at = now
    message.last_error = f"suppressed: {reason}"
    session.flush()
    record_message_event(session, "email.failed", message, reason="suppressed")


# --- the events about a message -------------------------------------------------------------

EVENT_COLUMNS = (
    Message.id,
    Message.to_address,
    Message.contact_id,
    Message.campaign_id,
    Message.template_id,
    Message.category,
    Message.status,
    Message.attempts,
    Message.cause_event_id,
    Message.cause_event_type,
    Message.version,
)


def message_event_data(message: Any, **extra: Any) -> dict[str, Any]:
    """What every email.* event says about its message (plus `extra`); `message` is a
    Message or a row with the same column names (EVENT_COLUMNS)."""
    cause = None
    if message.cause_event_id:
        cause = {"event_id": message.cause_event_id, "event_type": message.cause_event_type}
    return {
        "message_id": message.id,
        "to": message.to_address,
        "contact_id": message.contact_id,
        "campaign_id": message.campaign_id,
        "template_id": message.template_id,
        "category": message.category,
        "status": message.status,
        "attempts": message.attempts,
        "cause": cause,
        **extra,
    }


def message_event_row(service: str, event_type: str, message: Any, **extra: Any) -> dict[str, Any]:
    """The outbox row of an email.* event (for writing many at once with record_events)."""
    data = message_event_data(message, **extra)
    return outbox_row(service, event_type, message.id, data, aggregate_version=message.version)


def record_message_event(session: Session, event_type: str, message: Any, **extra: Any) -> str:
    """Write an email.* event about a message into the outbox (its version as the order)."""
    data = message_event_data(message, **extra)
    return record_event(session, event_type, message.id, data, aggregate_version=message.version)
