"""Task reminders: kept from the sales service's `task.*` events, fired once when due.

One reminder per task (unique task_id): scheduled -> sent | cancelled.
- `task.created` with a due date (and not done) schedules one; without a due date nothing.
- `task.updated`: a new due date, title or owner moves a scheduled reminder; a cleared due
  date cancels it; a due date given to a task that had none schedules one; a sent
  reminder whose due date moves ahead is scheduled again. Cancelled ones stay cancelled.
- `task.completed` and `task.deleted` cancel; `task.reopened` schedules again when the
  due date is still ahead.
- The recipient is the owner's email when the event names it (`owner_email`); a new owner
  without an email leaves the reminder without a recipient (never the old owner's), and
  at firing the owner's address comes from the staff replica (`users`) instead.

Events may arrive twice or out of order: `Reminder.version` holds the `aggregate_version`
of the last task event applied, and an event no newer is ignored. A completion or deletion
that overtakes the creation leaves a cancelled reminder behind, so the late creation
cannot schedule one.

`fire_due` (a worker timer) claims due reminders with one UPDATE whose candidates come
from `SELECT ... FOR UPDATE SKIP LOCKED` (several workers take disjoint rows; SQLite's
write lock serialises them), and in the same transaction queues the email (message id:
uuid5 of the reminder id and due time, so each firing is one message) and records
`task.reminder_due` for other channels. No recipient: only the event and a log line.
"""

from __future__ import annotations

import html
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.notifications.mailer import address_problem
from services.notifications.models import Reminder, new_id
from services.notifications.sending import queue_message
from services.notifications.users import staff_address
from shared.bus import Handler, PermanentError
from shared.config import Settings
from shared.db import Database, no_lock_wait, take_write_lock
from shared.events import Envelope, isoformat, utcnow
from shared.outbox import record_event
from shared.web import ApiError, conflict
from shared.worker import Timer

log = logging.getLogger(__name__)

BATCH_SIZE = 100
MAX_TITLE = 300
# Reminder emails get ids in their own namespace: uuid5(namespace, "<reminder id>:<due>").
REMINDER_MESSAGES = uuid.uuid5(uuid.NAMESPACE_URL, "urn:crm:notifications:reminder")
TASK_FIELDS = ("title", "due_at", "owner_id", "owner_email", "done")


def as_utc(moment: datetime | None) -> datetime | None:
    """An aware UTC datetime (SQLite hands back naive ones, which are UTC)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- reading task events -------------------------------------------------------------------


@dataclass(frozen=True)
class TaskFacts:
    """What a `task.*` event says about its task; `present` names the fields it carried."""

    task_id: str
    version: int | None
    title: str | None
    due_at: datetime | None
    owner_id: str | None
    owner_email: str | None
    done: bool
    present: frozenset[str]


def _uuid(value: Any, name: str) -> str | None:
    """A UUID string in canonical form (None stays None); else PermanentError."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return str(uuid.UUID(value))
    except ValueError:
        pass
    raise PermanentError(f"{name} must be a UUID string")


def _due_at(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PermanentError("due_at must be an ISO 8601 date-time")
    try:
        return as_utc(datetime.fromisoformat(value))
    except (ValueError, OverflowError):
        raise PermanentError(f"due_at is not an ISO 8601 date-time: {value[:40]!r}") from None


def _title(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PermanentError("title must be text")
    title = " ".join(value.replace("\x00", "").split())[:MAX_TITLE]
    return title or None


def _email(value: Any) -> str | None:
    """The owner's address if the mailer can send to it (else None: event only)."""
    address = value.strip() if isinstance(value, str) else value
    if address is None or address_problem(address) is not None:
        if address is not None:
            log.warning("task event with an unusable owner_email; no reminder email")
        return None
    return address


def task_facts(event: Envelope) -> TaskFacts:
    """Read a task event's data; PermanentError when it can never be applied."""
    data = event.data
    task_id = _uuid(data.get("task_id") or data.get("id") or event.aggregate_id, "task_id")
    assert task_id is not None
    return TaskFacts(
        task_id=task_id,
        version=event.aggregate_version,
        title=_title(data.get("title")),
        due_at=_due_at(data.get("due_at")),
        owner_id=_uuid(data.get("owner_id"), "owner_id"),
        owner_email=_email(data.get("owner_email")),
        done=data.get("done") is True,
        present=frozenset(name for name in TASK_FIELDS if name in data),
    )


# --- applying them -------------------------------------------------------------------------


def _current(session: Session, facts: TaskFacts) -> tuple[Reminder | None, bool]:
    """The task's reminder (locked) and whether this event is newer than what it holds."""
    reminder = session.scalars(
        select(Reminder).where(Reminder.task_id == facts.task_id).with_for_update()
    ).first()
    if reminder is None:
        return None, True
    if facts.version is not None and reminder.version >= facts.version:
        log.debug("task event v%s for %s is stale; ignored", facts.version, facts.task_id)
        return reminder, False
    if facts.version is not None:
        reminder.version = facts.version
    return reminder, True


def _new_reminder(session: Session, facts: TaskFacts, status: str) -> Reminder:
    now = utcnow()
    reminder = Reminder(
        id=new_id(),
        task_id=facts.task_id,
        owner_id=facts.owner_id,
        recipient=facts.owner_email,
        title=facts.title or "Untitled task",
        due_at=facts.due_at,
        status=status,
        version=facts.version or 1,
        created_at=now,
        updated_at=now,
    )
    session.add(reminder)
    return reminder


def _copy_facts(reminder: Reminder, facts: TaskFacts) -> None:
    """Take the event's due date, title and owner (a new owner: their email or none)."""
    if facts.due_at is not None:
        reminder.due_at = facts.due_at
    if facts.title is not None:
        reminder.title = facts.title
    if "owner_id" in facts.present and facts.owner_id != reminder.owner_id:
        reminder.owner_id, reminder.recipient = facts.owner_id, facts.owner_email
    elif facts.owner_email is not None:
        reminder.recipient = facts.owner_email
    reminder.updated_at = utcnow()


def _set_status(reminder: Reminder, status: str) -> None:
    reminder.status = status
    reminder.updated_at = utcnow()
    if status == "scheduled":
        reminder.fired_at = None


def _moved_ahead(reminder: Reminder, facts: TaskFacts) -> bool:
    """Whether the event gives an open task a new due date that is still to come."""
    due = facts.due_at
    if due is None or facts.done:
        return False
    return due != as_utc(reminder.due_at) and due > utcnow()


def schedule_from(session: Session, facts: TaskFacts) -> None:
    """`task.created` / `task.updated`: schedule, move or cancel the reminder.

    A sent reminder whose task gets a new due date ahead is scheduled again (the rep
    pushed the task out: they want a reminder for the new date); a cancelled one stays.
    """
    reminder, fresh = _current(session, facts)
    if not fresh:
        return
    if reminder is None:
        if facts.due_at is not None and not facts.done:
            _new_reminder(session, facts, "scheduled")
        return
    if reminder.status == "sent" and _moved_ahead(reminder, facts):
        _copy_facts(reminder, facts)
        _set_status(reminder, "scheduled")
        return
    if reminder.status != "scheduled":
        return
    _copy_facts(reminder, facts)
    cleared = "due_at" in facts.present and facts.due_at is None
    if cleared or facts.done:
        _set_status(reminder, "cancelled")


def cancel_for(session: Session, facts: TaskFacts) -> None:
    """`task.completed` / `task.deleted`: a scheduled reminder is cancelled."""
    reminder, fresh = _current(session, facts)
    if not fresh:
        return
    if reminder is None:
        if facts.due_at is not None and facts.version is not None:
            _new_reminder(session, facts, "cancelled")  # so a late task.created is stale
        return
    if reminder.status == "scheduled":
        _set_status(reminder, "cancelled")


def reschedule_for(session: Session, facts: TaskFacts) -> None:
    """`task.reopened`: scheduled again if the due date is still ahead."""
    reminder, fresh = _current(session, facts)
    if not fresh:
        return
    if reminder is None:
        if facts.due_at is not None and facts.due_at > utcnow():
            _new_reminder(session, facts, "scheduled")
        return
    _copy_facts(reminder, facts)
    cleared = "due_at" in facts.present and facts.due_at is None
    if not cleared and as_utc(reminder.due_at) > utcnow():  # type: ignore[operator]
        _set_status(reminder, "scheduled")


def on_task_scheduled(session: Session, event: Envelope) -> None:
    """`task.created`, `task.updated`: keep the reminder in step with the task."""
    schedule_from(session, task_facts(event))


def on_task_closed(session: Session, event: Envelope) -> None:
    """`task.completed`, `task.deleted`: no reminder for a task that is done or gone."""
    cancel_for(session, task_facts(event))


def on_task_reopened(session: Session, event: Envelope) -> None:
    """`task.reopened`: remind again if the task is still due."""
    reschedule_for(session, task_facts(event))


def handlers(settings: Settings) -> dict[str, Handler]:
    """The task events reminders follow, with their handlers."""
    return {
        "task.created": on_task_scheduled,
        "task.updated": on_task_scheduled,
        "task.completed": on_task_closed,
        "task.deleted": on_task_closed,
        "task.reopened": on_task_reopened,
    }


# --- changes from the API ------------------------------------------------------------------


def cancel_reminder(session: Session, reminder: Reminder) -> Reminder:
    """Cancel a scheduled reminder (a cancelled one stays so); a sent one cannot be."""
    if reminder.status == "sent":
        raise conflict("The reminder was sent already")
    if reminder.status == "scheduled":
        _set_status(reminder, "cancelled")
    return reminder


# --- firing --------------------------------------------------------------------------------


def message_id_for(reminder: Reminder) -> str:
    """The id of the email of this firing (a reminder fires again only at a new due time)."""
    name = f"{reminder.id}:{isoformat(reminder.due_at)}"
    return str(uuid.uuid5(REMINDER_MESSAGES, name))


def claim_due(session: Session, now: datetime, limit: int) -> list[Reminder]:
    """Mark up to `limit` due scheduled reminders sent (skipping locked ones); them.

    The due rows are locked and read first, then updated by id: an `IN (SELECT ... LIMIT n
    FOR UPDATE SKIP LOCKED)` inside the UPDATE may be re-run by PostgreSQL per row scanned.
    """
    due = [Reminder.status == "scheduled", Reminder.due_at <= now]
    if session.scalar(select(Reminder.id).where(*due).limit(1)) is None:
        return []  # idle: no lock taken (SQLite has only one)
    take_write_lock(session)
    with no_lock_wait(session):
        reminders = list(
            session.scalars(
                select(Reminder)
                .where(*due)
                .order_by(Reminder.due_at, Reminder.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
    for reminder in reminders:
        reminder.status, reminder.fired_at, reminder.updated_at = "sent", now, now
    session.flush()
    return reminders


def _email_reminder(session: Session, reminder: Reminder) -> str | None:
    """Queue the reminder email to its recipient; the message id (None if refused)."""
    due = as_utc(reminder.due_at).strftime("%Y-%m-%d %H:%M UTC")  # type: ignore[union-attr]
    title = reminder.title
    message_id = message_id_for(reminder)
    try:
        # A savepoint: a refused email must not hold back the batch (or the event).
        with session.begin_nested():
            queue_message(
                session,
                message_id=message_id,
                to=reminder.recipient or "",
                subject=f"Reminder: {title}",
                body_text=f'Your task "{title}" is due {due}.\n',
                body_html=f"<p>Your task <strong>{html.escape(title)}</strong> is due {due}.</p>",
                category="transactional",
            )
    except ApiError as error:
        log.warning("reminder %s: its email was refused: %s", reminder.id, error.errors)
        return None
    return message_id


def fire(session: Session, reminder: Reminder) -> None:
    """Send a claimed reminder: its email (when it has a recipient) and `task.reminder_due`."""
    if not reminder.recipient:  # the task named no email: the owner's, from the staff replica
        owner = staff_address(session, reminder.owner_id)
        reminder.recipient = owner["email"] if owner else None
    if reminder.recipient:
        reminder.message_id = _email_reminder(session, reminder)
    else:
        reminder.message_id = None
        log.info(
            "reminder %s of task %s has no recipient: published for other channels only",
            reminder.id,
            reminder.task_id,
        )
    data = {
        "task_id": reminder.task_id,
        "reminder_id": reminder.id,
        "owner_id": reminder.owner_id,
        "owner_email": reminder.recipient,
        "title": reminder.title,
        "due_at": isoformat(reminder.due_at),
        "fired_at": isoformat(reminder.fired_at) if reminder.fired_at else None,
        "message_id": reminder.message_id,
    }
    record_event(session, "task.reminder_due", reminder.task_id, data)


def fire_due(
    db: Database, settings: Settings, now: datetime | None = None, batch: int = BATCH_SIZE
) -> int:
    """Fire every reminder due at `now` (default: the clock); how many fired."""
    moment = as_utc(now) or utcnow()
    fired = 0
    while True:
        with db.session() as session:
            reminders = claim_due(session, moment, batch)
            for reminder in reminders:
                fire(session, reminder)
        fired += len(reminders)
        if len(reminders) < batch:
            break
    if fired:
        log.info("fired %d reminder(s)", fired)
    return fired


def reminder_timer(settings: Settings, db: Database) -> Timer:
    """The worker timer that fires due reminders."""
    every = float(settings.extra.get("notifications_tick_seconds", 1.0))

    def fire_reminders() -> None:
        """Fire what is due now."""
        fire_due(db, settings)

    return Timer(every, fire_reminders, "reminders")
