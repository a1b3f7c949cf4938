"""Tasks and follow-ups: create, change, complete, reopen, delete; each with its event.

`task.created` carries the title, due date, owner, contact and deal: the notifications
service schedules its reminder from it (and reschedules from `task.updated`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from services.sales.models import Deal, Task, new_id
from services.sales.schemas import task_view
from shared.auth import Principal
from shared.events import utcnow
from shared.outbox import record_event
from shared.owner_scope import ensure_in_scope, ensure_owner_allowed
from shared.pagination import SortKey
from shared.web import check_version, conflict, invalid, not_found

TASK_FIELDS = ("title", "notes", "due_at", "contact_id", "deal_id", "lead_id", "owner_id")
# Tasks without a due date sort after every dated task.
NO_DUE_DATE = datetime(9999, 12, 31, tzinfo=UTC)
DEFAULT_SORT = "due_at"
EQUALITY_FILTERS = ("owner_id", "contact_id", "deal_id", "lead_id", "done")


def get_task(session: Session, task_id: str, *, for_update: bool = False) -> Task:
    """A task, or 404; `for_update` locks its row until the transaction ends."""
    statement = select(Task).where(Task.id == str(task_id))
    if for_update:
        statement = statement.with_for_update()
    task = session.scalars(statement).first()
    if task is None:
        raise not_found("task", task_id)
    return task


def record_task_event(session: Session, event_type: str, task: Task, **extra: Any) -> None:
    """`task.*` carrying the task as the API shows it, versioned for ordered replicas."""
    session.flush()
    data = {**task_view(task), "task_id": task.id, **extra}
    record_event(session, event_type, task.id, data, aggregate_version=task.version)


def _ensure_deal(session: Session, deal_id: str | None) -> None:
    if deal_id and session.get(Deal, deal_id) is None:
        raise invalid({"deal_id": ["No deal with this id exists."]})


def _touch(task: Task) -> None:
    task.version += 1
    task.updated_at = utcnow()


def create_task(
    session: Session,
    data: Mapping[str, Any],
    actor: Principal | None,
) -> Task:
    """Create a task from validated input (owner: the actor unless named); `task.created`.

    When the owner is the actor, the event carries `owner_email` (from the caller's token),
    so notifications can email the reminder without a copy of the users table. An owner
    the actor may not give tasks to is a 403; `actor` None is the system (an event).
    """
    ensure_owner_allowed(actor, data)
    actor_id = actor.subject if actor else None
    actor_email = actor.email if actor else None
    task_id = data.get("id") or new_id()
    if session.get(Task, task_id) is not None:
        raise conflict(f"A task with id {task_id} exists already")
    _ensure_deal(session, data.get("deal_id"))
    now = utcnow()
    task = Task(id=task_id, version=1, created_at=now, updated_at=now, done=False)
    for name in TASK_FIELDS:
        setattr(task, name, data.get(name))
    task.owner_id = data.get("owner_id") or actor_id
    if data.get("done"):
        task.done, task.completed_at = True, now
    session.add(task)
    extra = {"owner_email": actor_email} if actor_email and task.owner_id == actor_id else {}
    record_task_event(session, "task.created", task, **extra)
    return task


def update_task(
    session: Session,
    task: Task,
    changes: Mapping[str, Any],
    actor: Principal | None,
    *,
    expected_version: int | None = None,
) -> Task:
    """Apply a partial update; one event: `task.completed`/`task.reopened` when `done`
    flips (carrying any other changes too), else `task.updated` naming what changed.
    The actor's owner scope holds: only their own task, given to nobody else."""
    ensure_in_scope(actor, task, "task")
    ensure_owner_allowed(actor, changes)
    check_version(task.version, expected_version)
    return _apply(session, task, changes)


def _apply(session: Session, task: Task, changes: Mapping[str, Any]) -> Task:
    if changes.get("deal_id") and changes["deal_id"] != task.deal_id:
        _ensure_deal(session, changes["deal_id"])
    changed = []
    for name in TASK_FIELDS:
        if name in changes and getattr(task, name) != changes[name]:
            setattr(task, name, changes[name])
            changed.append(name)
    event_type = "task.updated"
    if "done" in changes and changes["done"] != task.done:
        _set_done(task, changes["done"])
        changed.append("done")
        event_type = "task.completed" if task.done else "task.reopened"
    if changed:
        _touch(task)
        record_task_event(session, event_type, task, changed=changed)
    return task


def _set_done(task: Task, done: bool) -> None:
    task.done = done
    task.completed_at = utcnow() if done else None


def complete_task(session: Session, task: Task, *, expected_version: int | None = None) -> Task:
    """Mark an open task done; `task.completed`. A done task is a 409."""
    check_version(task.version, expected_version)
    if task.done:
        raise conflict("The task is done already")
    return _apply(session, task, {"done": True})


def reopen_task(session: Session, task: Task, *, expected_version: int | None = None) -> Task:
    """Mark a done task not done; `task.reopened`. A task not done is a 409."""
    check_version(task.version, expected_version)
    if not task.done:
        raise conflict("The task is not done: only a done task can be reopened")
    return _apply(session, task, {"done": False})


def delete_task(session: Session, task: Task, *, expected_version: int | None = None) -> None:
    """Delete a task and record `task.deleted`."""
    check_version(task.version, expected_version)
    _touch(task)
    record_task_event(session, "task.deleted", task)
    session.delete(task)


def list_statement(args: Mapping[str, Any], now: datetime) -> Select[Any]:
    """The tasks matching the list's (validated) query parameters.

    `overdue=true` is "not done and due before now": with `owner_id` it reads the index
    ix_tasks_owner_done_due (owner, done, due) as one range.
    """
    statement = select(Task)
    for name in EQUALITY_FILTERS:
        if args.get(name) is not None:
            statement = statement.where(getattr(Task, name) == args[name])
    overdue = args.get("overdue")
    if overdue is True:
        statement = statement.where(Task.done.is_(False), Task.due_at < now)
    elif overdue is False:
        statement = statement.where(
            or_(Task.done.is_(True), Task.due_at.is_(None), Task.due_at >= now)
        )
    if args.get("due_before") is not None:
        statement = statement.where(Task.due_at < args["due_before"])
    if args.get("due_after") is not None:
        statement = statement.where(Task.due_at >= args["due_after"])
    return statement


def task_sorts(args: Mapping[str, Any]) -> dict[str, SortKey]:
    """The sort keys of a task list with these filters.

    When the filters leave out tasks without a due date (overdue, due_before, due_after),
    `due_at` sorts on the bare column so the database can read the rows in index order;
    otherwise a missing due date counts as the far future.
    """
    dated = args.get("overdue") is True or any(
        args.get(name) is not None for name in ("due_before", "due_after")
    )
    due = Task.due_at if dated else func.coalesce(Task.due_at, NO_DUE_DATE)
    return {
        "due_at": SortKey("due_at", due, null_as=NO_DUE_DATE),
        "created_at": SortKey("created_at", Task.created_at),
        "updated_at": SortKey("updated_at", Task.updated_at),
    }
