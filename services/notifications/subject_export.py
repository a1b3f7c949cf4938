"""The notifications service's part of the subject access export.

What it holds on a person: the address it keeps for them (a replica), every message of
the delivery log sent to the contact or to their address (bodies, headers and followed
links included), a suppression of their address, and the webhook deliveries whose
payload names them (their id or address) with that payload.

Reminders belong to tasks, and which tasks are the person's only sales knows: the
gateway asks `.../notifications/<contact_id>/reminders?task_ids=<id>,<id>...` with the
task ids of the sales export, at most MAX_TASK_IDS a call (a URL has a length limit).
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from services.notifications.messages_api import message_view
from services.notifications.models import (
    Click,
    ContactAddress,
    Message,
    Reminder,
    Suppression,
    WebhookDelivery,
)
from services.notifications.reminders_api import reminder_view
from services.notifications.webhooks_api import delivery_view
from shared.auth import require_role
from shared.events import utcnow
from shared.openapi import documented
from shared.subject_export import (
    Subject,
    checked_contact_id,
    columns,
    subject_export_blueprint,
)
from shared.web import ApiError, current_db, invalid

SERVICE = "notifications"
MAX_TASK_IDS = 100
TASK_IDS_PARAMETER = {
    "in": "query",
    "name": "task_ids",
    "description": f"The person's task ids (from sales), comma-separated, {MAX_TASK_IDS} at most.",
    "schema": {"type": "string"},
}


def message_export(session: Session, message: Message) -> dict[str, Any]:
    """A message with its bodies and headers, and each link followed in it."""
    clicks = session.scalars(
        select(Click).where(Click.message_id == message.id).order_by(Click.clicked_at)
    )
    return {
        **message_view(message, with_bodies=True),
        "clicks": [columns(click, ("message_id",)) for click in clicks],
    }


def deliveries_naming(session: Session, names: list[str]) -> list[WebhookDelivery]:
    """The webhook deliveries whose payload holds one of `names` (ids, addresses)."""
    payload = func.lower(WebhookDelivery.payload)
    condition = or_(*(payload.contains(name.lower(), autoescape=True) for name in names))
    statement = select(WebhookDelivery).where(condition)
    return list(session.scalars(statement.order_by(WebhookDelivery.created_at)))


def export_person(session: Session, subject: Subject) -> dict[str, Any]:
    """Everything notifications holds on the person but reminders (see the docstring)."""
    address = session.get(ContactAddress, subject.contact_id)
    known = (subject.email, address.email if address else None)
    emails = sorted({email.lower() for email in known if email})
    messages = session.scalars(
        select(Message)
        .where(or_(Message.contact_id == subject.contact_id, Message.to_key.in_(emails)))
        .order_by(Message.created_at, Message.id)
    )
    suppressed = session.scalars(select(Suppression).where(Suppression.email_key.in_(emails)))
    deliveries = deliveries_naming(session, [subject.contact_id, *emails])
    return {
        "address": columns(address) if address else None,
        "messages": [message_export(session, message) for message in messages],
        "suppressions": [columns(row) for row in suppressed],
        "webhook_deliveries": [delivery_view(row, with_payload=True) for row in deliveries],
    }


def requested_task_ids(args: Any) -> list[str]:
    """The `task_ids` asked for (comma-separated ids, at most MAX_TASK_IDS); 422 if wrong."""
    unknown = sorted(set(args) - {"task_ids"})
    if unknown:
        raise invalid({name: ["Unknown query parameter."] for name in unknown})
    ids = [part for part in (args.get("task_ids") or "").split(",") if part]
    if len(ids) > MAX_TASK_IDS:
        raise invalid({"task_ids": [f"At most {MAX_TASK_IDS} ids a call."]})
    try:
        return [checked_contact_id(task_id) for task_id in ids]
    except ApiError:
        raise invalid({"task_ids": ["Each must be a task id (a UUID)."]}) from None


subject_export_api = subject_export_blueprint(SERVICE, export_person)


@subject_export_api.get(f"/{SERVICE}/<contact_id>/reminders")
@documented(parameters=[TASK_IDS_PARAMETER])
def subject_reminders(contact_id: str) -> Response:
    """The reminders of the person's tasks (admin only; ?task_ids= from sales)."""
    require_role()  # no role but admin
    contact_id = checked_contact_id(contact_id)
    task_ids = requested_task_ids(request.args)
    with current_db().session() as session:
        statement = select(Reminder).where(Reminder.task_id.in_(task_ids))
        reminders = session.scalars(statement.order_by(Reminder.created_at, Reminder.id))
        body = [reminder_view(reminder) for reminder in reminders]
    return jsonify(
        {"service": SERVICE, "contact_id": contact_id, "exported_at": utcnow(), "reminders": body}
    )
