"""Events the sales service reacts to: erasures, merges, email engagement of leads, and
tasks other services ask for (`task.requested`, from marketing's automations)."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.sales import leads, privacy, scoring, tasks
from services.sales.models import OPEN_LEAD_STATUSES, Lead, Task
from services.sales.schemas import TaskInSchema
from shared.bus import Handler, PermanentError
from shared.contact_events import erased_contact_ids
from shared.events import Envelope
from shared.web import ApiError

# The behaviour an event shows, as a lead-scoring kind.
BEHAVIOUR_EVENTS = {
    "email.opened": "email_opened",
    "email.clicked": "email_clicked",
    "form.submitted": "form_submitted",
}


def _text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise PermanentError(f"{name} must be a non-empty string")
    return value


def on_contact_erased(session: Session, event: Envelope) -> None:
    """Right to be forgotten: anonymise what sales holds about the person and their merges."""
    privacy.erase_contact(session, erased_contact_ids(event))


def on_contact_merged(session: Session, event: Envelope) -> None:
    """A duplicate folded into a contact: its deals, leads and tasks follow."""
    contact_id = _text(event.data, "id") or event.aggregate_id
    duplicate_id = _text(event.data, "duplicate_id")
    if not contact_id or not duplicate_id:
        raise PermanentError("contact.merged needs id and duplicate_id")
    if privacy.is_erased(session, contact_id):
        return
    privacy.repoint_contact(session, duplicate_id, contact_id)


def _lead_of(session: Session, data: dict[str, Any]) -> Lead | None:
    """The open lead an engagement event is about: by lead id, else by email address."""
    lead_id = _text(data, "lead_id")
    if lead_id:
        lead = session.get(Lead, lead_id)
        return lead if lead is not None and lead.status in OPEN_LEAD_STATUSES else None
    email = _text(data, "email") or _text(data, "to")
    if email:
        return leads.find_open_lead_by_email(session, email)
    contact_id = _text(data, "contact_id")
    if contact_id:
        return session.scalar(
            select(Lead)
            .where(Lead.contact_id == contact_id, Lead.status.in_(OPEN_LEAD_STATUSES))
            .limit(1)
        )
    return None


def on_engagement(session: Session, event: Envelope) -> None:
    """Behaviour points for a lead that opened, clicked or submitted a form."""
    lead = _lead_of(session, event.data)
    if lead is not None:
        kind = BEHAVIOUR_EVENTS[event.type]
        scoring.record_behaviour(session, lead, kind, event.id, event.occurred_at)


def on_task_requested(session: Session, event: Envelope) -> None:
    """Make the task another service asked for, as `POST /tasks` makes it (`task.created`),
    under its `task_id`: once, however often asked. Fields the API does not take are
    ignored; a request the API would refuse is a PermanentError (dead-lettered)."""
    data = event.data
    if data.get("redacted"):
        return  # about someone erased before it was published
    given = {name: data[name] for name in tasks.TASK_FIELDS if name in data}
    try:
        task = TaskInSchema().load({**given, "id": data.get("task_id")})
    except ValidationError as error:
        raise PermanentError(f"task.requested is not a valid task: {error.messages}") from None
    if not task.get("id"):
        raise PermanentError("task.requested needs a task_id")
    if session.get(Task, task["id"]) is not None:
        return  # asked again: made already
    if task.get("contact_id") and privacy.is_erased(session, task["contact_id"]):
        return
    try:
        tasks.create_task(session, task, None)  # the system: no owner scope
    except ApiError as error:  # the field errors say what to fix before a replay
        reason = f"{error.detail or error.title} {error.errors or ''}".strip()
        raise PermanentError(f"task.requested refused: {reason}") from None


def handlers() -> dict[str, Handler]:
    """Every event type this service consumes, with its handler."""
    table: dict[str, Handler] = dict.fromkeys(BEHAVIOUR_EVENTS, on_engagement)
    table["contact.erased"] = on_contact_erased
    table["contact.merged"] = on_contact_merged
    table["task.requested"] = on_task_requested
    return table
