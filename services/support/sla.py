"""SLA clocks: deadlines from a policy's targets, business hours and pauses.

The policy for a ticket is the one for its priority (none: the ticket has no SLA, its
deadlines are null and no clock runs; a policy that applies later, by a priority change or
a new policy, starts the resolution clock then and counts the first response from
`created_at`). Two targets, in business time of the policy's calendar (null: 24/7):

- **First response** is due `first_response_minutes` after `created_at`. Pending does not
  pause it (a ticket normally goes pending after a first reply). Once `first_responded_at`
  is set the due time is final and the warning time is cleared.
- **Resolution**: the clock runs while the ticket is new or open; pending pauses it (the
  business seconds run so far add up in `sla_elapsed_seconds`, `sla_running_since` is null
  and `resolution_due_at` is null: nothing can breach while paused); resolved or closed
  stop it (deadlines kept for reporting, warning times cleared); a reopen continues from
  the elapsed time. The due time is when running time reaches `resolution_minutes`.
  A priority change applies the new targets to the time run so far; a change of calendar
  (priority or policy) banks the time run so far in the old calendar and goes on in the new.

Warnings are due at 80% of a target. The worker's sweep (services/support/sweep.py)
publishes `ticket.sla_warning` and `ticket.sla_breached`; `refresh` publishes only a breach
the sweep cannot see any more: a deadline that passed while the clock ran but is stopping
or pausing now before the sweep flagged it, and a first response given late. Breach
records (`*_breached_at`, `sla_breached`) are never cleared.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from services.support.business_hours import (
    BusinessCalendar,
    add_business_seconds,
    business_seconds_between,
    parse_calendar,
)
from services.support.models import OPEN_STATUSES, SlaPolicy, Ticket
from shared.events import isoformat
from shared.outbox import record_event

# Statuses whose resolution clock runs; pending (the other open status) pauses it.
RUNNING_STATUSES = ("new", "open")
DONE_STATUSES = ("resolved", "closed")
WARN_SHARE = (4, 5)  # warnings at 80% of a target
TARGETS = ("first_response", "resolution")
RECOMPUTE_BATCH = 200
# The ticket columns `refresh` may change: a change to any bumps the version on recompute.
SLA_FIELDS = (
    "sla_policy_id",
    "sla_elapsed_seconds",
    "sla_running_since",
    "first_response_due_at",
    "first_response_warn_at",
    "resolution_due_at",
    "resolution_warn_at",
    "first_response_breached_at",
    "resolution_breached_at",
    "sla_breached",
)


@dataclass(frozen=True)
class Targets:
    """What a policy asks, as the clocks use it (a snapshot, so a change can be compared)."""

    policy_id: str
    first_response_seconds: int
    resolution_seconds: int
    calendar: BusinessCalendar | None


def targets_of(policy: SlaPolicy | None) -> Targets | None:
    """The targets of a policy (None for no policy)."""
    if policy is None:
        return None
    return Targets(
        policy_id=policy.id,
        first_response_seconds=policy.first_response_minutes * 60,
        resolution_seconds=policy.resolution_minutes * 60,
        calendar=parse_calendar(policy.calendar),
    )


def as_utc(moment: datetime | None) -> datetime | None:
    """An aware UTC datetime (SQLite gives naive ones back, which are UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def warn_seconds(target_seconds: int) -> int:
    """When a warning is due: 80% of the target."""
    share, whole = WARN_SHARE
    return target_seconds * share // whole


def policy_for(session: Session, priority: str) -> SlaPolicy | None:
    """The policy for a priority, if there is one."""
    return session.scalar(select(SlaPolicy).where(SlaPolicy.priority == priority))


def _column_value(ticket: Ticket, name: str) -> Any:
    """An attribute, or its column default while the ticket is not flushed yet."""
    value = getattr(ticket, name)
    if value is None:
        default = Ticket.__table__.c[name].default
        value = default.arg if default is not None and default.is_scalar else None
    return value


def refresh(
    session: Session, ticket: Ticket, now: datetime, previous_status: str | None = None
) -> None:
    """Recompute the ticket's SLA state after a create (previous_status None) or a change.

    Call it after a create, a status change, a priority change and once the first
    response is recorded. The clock's state is stored on the ticket, so the state is
    derived from `ticket.status` and the stored clock; `previous_status` is accepted for
    the callers' record but not needed, and calling `refresh` twice changes nothing.
    The caller bumps the ticket's version; it should hold the ticket's row lock.
    """
    before = targets_of(
        session.get(SlaPolicy, ticket.sla_policy_id) if ticket.sla_policy_id else None
    )
    after = targets_of(policy_for(session, _column_value(ticket, "priority")))
    apply_targets(session, ticket, as_utc(now), before, after)


def apply_targets(
    session: Session,
    ticket: Ticket,
    now: datetime,
    before: Targets | None,
    after: Targets | None,
) -> None:
    """Move the ticket from the targets it had (`before`) to the ones it has now (`after`)."""
    status = _column_value(ticket, "status")
    if ticket.created_at is None:
        ticket.created_at = now  # the first response is due from here: store it exactly
    _record_missed_breaches(session, ticket, now, status)
    runs = after is not None and status in RUNNING_STATUSES
    _move_clock(ticket, now, before, after, runs)
    if status in DONE_STATUSES:
        ticket.first_response_warn_at = ticket.resolution_warn_at = None
        return
    if after is None:
        ticket.sla_policy_id = None
        ticket.first_response_due_at = ticket.first_response_warn_at = None
        ticket.resolution_due_at = ticket.resolution_warn_at = None
        return
    ticket.sla_policy_id = after.policy_id
    _set_first_response(ticket, after)
    _set_resolution(ticket, after, runs)


def _move_clock(
    ticket: Ticket, now: datetime, before: Targets | None, after: Targets | None, runs: bool
) -> None:
    """Bank the running time when the clock stops or its calendar changes; (re)start it."""
    since = as_utc(ticket.sla_running_since)
    same_calendar = before is not None and after is not None and before.calendar == after.calendar
    if since is not None and not (runs and same_calendar):
        calendar = before.calendar if before is not None else None
        elapsed = _column_value(ticket, "sla_elapsed_seconds") or 0
        ticket.sla_elapsed_seconds = elapsed + business_seconds_between(since, now, calendar)
        ticket.sla_running_since = None
    if runs and ticket.sla_running_since is None:
        ticket.sla_running_since = now


def _set_first_response(ticket: Ticket, targets: Targets) -> None:
    if ticket.first_responded_at is not None:
        ticket.first_response_warn_at = None  # the due time is final
        return
    created = as_utc(ticket.created_at)
    seconds, calendar = targets.first_response_seconds, targets.calendar
    ticket.first_response_due_at = add_business_seconds(created, seconds, calendar)
    ticket.first_response_warn_at = add_business_seconds(created, warn_seconds(seconds), calendar)


def _set_resolution(ticket: Ticket, targets: Targets, runs: bool) -> None:
    if not runs:  # pending: paused, nothing can breach
        ticket.resolution_due_at = ticket.resolution_warn_at = None
        return
    since = as_utc(ticket.sla_running_since)
    elapsed = _column_value(ticket, "sla_elapsed_seconds") or 0
    seconds, calendar = targets.resolution_seconds, targets.calendar
    ticket.resolution_due_at = add_business_seconds(since, seconds - elapsed, calendar)
    ticket.resolution_warn_at = add_business_seconds(
        since, warn_seconds(seconds) - elapsed, calendar
    )


def _record_missed_breaches(session: Session, ticket: Ticket, now: datetime, status: str) -> None:
    """Breaches the sweep can no longer find: recorded here, in the caller's transaction."""
    due = as_utc(ticket.resolution_due_at)
    if status not in RUNNING_STATUSES and due is not None and due <= now:
        if ticket.resolution_breached_at is None:
            record_breach(session, ticket, "resolution", now)
    due = as_utc(ticket.first_response_due_at)
    if due is None or ticket.first_response_breached_at is not None:
        return
    responded = as_utc(ticket.first_responded_at)
    late = responded > due if responded is not None else status in DONE_STATUSES and due <= now
    if late:
        record_breach(session, ticket, "first_response", now)


def record_breach(session: Session, ticket: Ticket, target: str, now: datetime) -> bool:
    """Stamp a breach and record `ticket.sla_breached`, unless someone stamped it first.

    The stamp is a conditional UPDATE, so a sweep that flagged the ticket concurrently
    wins and no second event is written (it waits for the sweep's row lock on PostgreSQL).
    """
    stamp = f"{target}_breached_at"
    claimed = session.execute(
        update(Ticket)
        .where(Ticket.id == ticket.id, getattr(Ticket, stamp).is_(None))
        .values({stamp: now, "sla_breached": True})
        .execution_options(synchronize_session=False)
    ).rowcount
    if not claimed:
        current = session.scalar(select(getattr(Ticket, stamp)).where(Ticket.id == ticket.id))
        set_committed_value(ticket, stamp, current)
        set_committed_value(ticket, "sla_breached", True)
        return False
    set_committed_value(ticket, stamp, now)
    set_committed_value(ticket, "sla_breached", True)
    record_alert(session, ticket, "ticket.sla_breached", target)
    return True


def alert_data(ticket: Ticket, target: str) -> dict[str, Any]:
    """The data of `ticket.sla_warning` / `ticket.sla_breached`: the ticket and the target."""

    def moment(name: str) -> str | None:
        value = as_utc(getattr(ticket, name))
        return isoformat(value) if value is not None else None

    return {
        "ticket_id": ticket.id,
        "contact_id": ticket.contact_id,
        "assignee_id": ticket.assignee_id,
        "priority": ticket.priority,
        "status": ticket.status,
        "subject": ticket.subject,
        "channel": ticket.channel,
        "sla_policy_id": ticket.sla_policy_id,
        "target": target,
        "due_at": moment(f"{target}_due_at"),
        "warn_at": moment(f"{target}_warn_at"),
        "first_response_due_at": moment("first_response_due_at"),
        "resolution_due_at": moment("resolution_due_at"),
        "first_responded_at": moment("first_responded_at"),
        "sla_breached": bool(ticket.sla_breached),
        "created_at": moment("created_at"),
    }


def record_alert(session: Session, ticket: Ticket, event_type: str, target: str) -> str:
    """Write one SLA alert into the outbox; its event id."""
    return record_event(
        session,
        event_type,
        ticket.id,
        alert_data(ticket, target),
        aggregate_version=ticket.version,
    )


def sla_state(ticket: Ticket) -> tuple[Any, ...]:
    """The ticket's SLA columns: to tell whether a recompute changed anything."""
    values = (getattr(ticket, name) for name in SLA_FIELDS)
    return tuple(as_utc(value) if isinstance(value, datetime) else value for value in values)


def reapply_policy(
    session: Session,
    priority: str,
    before: Targets | None,
    after: Targets | None,
    now: datetime,
) -> int:
    """Recompute the open tickets of a priority after its policy changed; how many changed.

    `before` is the policy as it was (its calendar settles the time run so far), `after`
    as it is now (None: deleted). Tickets are locked and handled in batches by id; each
    one changed gets a new version.
    """
    now = as_utc(now)
    changed, last_id = 0, ""
    while True:
        batch = session.scalars(
            select(Ticket)
            .where(Ticket.priority == priority, Ticket.status.in_(OPEN_STATUSES))
            .where(Ticket.id > last_id)
            .order_by(Ticket.id)
            .limit(RECOMPUTE_BATCH)
            .with_for_update()
        ).all()
        for ticket in batch:
            changed += _reapply_one(session, ticket, now, before, after)
        session.flush()
        for ticket in batch:
            session.expunge(ticket)
        if len(batch) < RECOMPUTE_BATCH:
            return changed
        last_id = batch[-1].id


def _reapply_one(
    session: Session, ticket: Ticket, now: datetime, before: Targets | None, after: Targets | None
) -> int:
    """Recompute one ticket; 1 if its SLA state changed (its version is bumped), else 0."""
    if before is not None and ticket.sla_policy_id == before.policy_id:
        held = before
    elif ticket.sla_policy_id is not None:
        held = targets_of(session.get(SlaPolicy, ticket.sla_policy_id))
    else:
        held = None
    state = sla_state(ticket)
    apply_targets(session, ticket, now, held, after)
    if sla_state(ticket) == state:
        return 0
    ticket.version += 1
    return 1
