"""The reminders HTTP API: list and read task reminders; DELETE cancels one.

Reminders are made from the sales service's task events, never through this API.
Everyone may read them; sales reps, admins and the reminder's owner may cancel one. A
sales rep without team visibility sees and cancels only their own, as with their tasks
(shared.owner_scope: someone else's answers 404).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from marshmallow import fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.notifications.models import REMINDER_STATUSES, Reminder
from services.notifications.reminders import cancel_reminder
from shared.auth import current_principal, forbidden
from shared.events import isoformat
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.schemas import StrictSchema
from shared.web import current_db, no_content, not_found, parse_args

reminders_api = Blueprint("reminders", __name__, url_prefix="/api/v1")
BASE = "/reminders"
REMINDER_SORTS = {
    "due_at": SortKey("due_at", Reminder.due_at),
    "created_at": SortKey("created_at", Reminder.created_at),
    "updated_at": SortKey("updated_at", Reminder.updated_at),
}
CANCELLING_ROLES = ("admin", "sales")


class ReminderListArgsSchema(StrictSchema):
    owner_id = fields.UUID()
    task_id = fields.UUID()
    status = fields.String(validate=validate.OneOf(REMINDER_STATUSES))
    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


reminder_list_query = ReminderListArgsSchema()


def reminder_view(reminder: Reminder) -> dict[str, Any]:
    """A reminder as the API answers it."""
    return {
        "id": reminder.id,
        "task_id": reminder.task_id,
        "owner_id": reminder.owner_id,
        "recipient": reminder.recipient,
        "title": reminder.title,
        "due_at": isoformat(reminder.due_at),
        "status": reminder.status,
        "fired_at": isoformat(reminder.fired_at) if reminder.fired_at else None,
        "message_id": reminder.message_id,
        "created_at": isoformat(reminder.created_at),
        "updated_at": isoformat(reminder.updated_at),
    }


def get_reminder(session: Session, reminder_id: Any, *, for_update: bool = False) -> Reminder:
    """A reminder, or 404; `for_update` locks it until the transaction ends."""
    statement = select(Reminder).where(Reminder.id == str(reminder_id))
    if for_update:
        statement = statement.with_for_update()
    reminder = session.scalars(statement).first()
    if reminder is None:
        raise not_found("reminder", reminder_id)
    return reminder


@reminders_api.get(BASE)
def list_reminders() -> Any:
    """Reminders by due date (or ?sort=), filtered by owner_id, task_id, status; paged."""
    args = parse_args(reminder_list_query)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), REMINDER_SORTS, "due_at")
    statement = select(Reminder)
    for name in ("owner_id", "task_id", "status"):
        if name in args:
            statement = statement.where(getattr(Reminder, name) == args[name])
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, Reminder.id, limit=limit, cursor=cursor
        )
        return page_answer([reminder_view(reminder) for reminder in rows], next_cursor)


@reminders_api.get(f"{BASE}/<uuid:reminder_id>")
def get(reminder_id: Any) -> Any:
    """One reminder."""
    with current_db().session() as session:
        return reminder_view(get_reminder(session, reminder_id))


@reminders_api.delete(f"{BASE}/<uuid:reminder_id>")
def cancel(reminder_id: Any) -> Any:
    """Cancel a reminder (204; again is harmless); 409 once it was sent."""
    principal = current_principal()
    with current_db().session() as session:
        reminder = get_reminder(session, reminder_id, for_update=True)
        if principal.role not in CANCELLING_ROLES and principal.subject != reminder.owner_id:
            raise forbidden(f"The role {principal.role!r} may cancel only its own reminders")
        cancel_reminder(session, reminder)
    return no_content()
