"""Tickets: create, change, assign, move through their statuses, delete; each with its events.

Plain functions taking a session, so the HTTP routes, the batches, the comments and the
event handlers go through the same rules and record the same events.

Every change bumps the ticket's version once and records its events with that version as
`aggregate_version` (data = the ticket view plus `ticket_id`): `ticket.created` (plus
`requester` {email, name} when support named a new contact), `ticket.updated` (`changed`
names the edited fields), `ticket.assigned` (`assignee_id`, `previous_assignee_id`),
`ticket.status_changed` (`from`, `to`), `ticket.resolved` (`csat_token`),
`ticket.reopened` (`reopened_count`) and `ticket.deleted`. The SLA clocks follow every
change that moves them (services/support/sla.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.support import csat, sla
from services.support.models import Ticket, new_id
from services.support.ticket_schemas import ticket_view
from shared.config import Settings
from shared.db import take_write_lock
from shared.events import utcnow
from shared.outbox import record_event
from shared.web import check_version, conflict, not_found

# What PATCH edits besides the status and the assignee (they have events of their own).
EDITABLE_FIELDS = ("subject", "description", "channel", "priority", "tags")
# Where a ticket may go from each status; resolved -> open is a reopening.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "new": ("open", "pending", "resolved"),
    "open": ("pending", "resolved"),
    "pending": ("open", "resolved"),
    "resolved": ("open", "closed"),
    "closed": (),
}
# Marks "the change does not touch the assignee" (None means "unassign").
UNCHANGED: Any = object()


def get_ticket(session: Session, ticket_id: str) -> Ticket:
    """The ticket with this id, or 404."""
    ticket = session.get(Ticket, str(ticket_id))
    if ticket is None:
        raise not_found("Ticket", ticket_id)
    return ticket


def lock_ticket(session: Session, ticket_id: str) -> Ticket:
    """The ticket, freshly read and locked until the transaction ends; 404 if unknown."""
    take_write_lock(session)
    ticket = session.get(Ticket, str(ticket_id), with_for_update=True, populate_existing=True)
    if ticket is None:
        raise not_found("Ticket", ticket_id)
    return ticket


def record_ticket_event(session: Session, event_type: str, ticket: Ticket, **extra: Any) -> None:
    """`ticket.*` carrying the ticket as the API shows it, versioned for ordered replicas."""
    session.flush()
    data = {**ticket_view(ticket), "ticket_id": ticket.id, **extra}
    record_event(session, event_type, ticket.id, data, aggregate_version=ticket.version)


def touch(ticket: Ticket, now: datetime) -> None:
    """A new version of the ticket: every change bumps it once."""
    ticket.version += 1
    ticket.updated_at = now


def _new_ticket(ticket_id: str, data: Mapping[str, Any], now: datetime) -> Ticket:
    """The ticket a create describes (not added yet): `new`, or `open` with an assignee."""
    requester = data.get("requester") or {}
    return Ticket(
        id=ticket_id,
        contact_id=str(data.get("contact_id") or new_id()),
        requester_email=requester["email"].strip() if requester else None,
        requester_name=requester.get("name"),
        subject=data["subject"].strip(),
        description=data.get("description"),
        channel=data.get("channel", "web"),
        priority=data.get("priority", "normal"),
        status="open" if data.get("assignee_id") else "new",
        assignee_id=data.get("assignee_id"),
        tags=data.get("tags", []),
        sla_elapsed_seconds=0,
        sla_breached=False,
        reopened_count=0,
        version=1,
        created_at=now,
        updated_at=now,
    )


def create_ticket(session: Session, data: Mapping[str, Any], actor_id: str | None = None) -> Ticket:
    """Create a ticket from validated input, start its SLA clocks, record `ticket.created`.

    Without a `contact_id` the `requester` {email, name} names a new contact: support
    makes its id, and the event's `requester` asks the contacts service to create it (or
    to link the contact holding that email, publishing `contact.merged`). A ticket given
    an assignee starts `open`, else `new`; an assignee also records `ticket.assigned`.
    """
    ticket_id = str(data.get("id") or new_id())
    if session.get(Ticket, ticket_id) is not None:
        raise conflict(f"A ticket with id {ticket_id} exists already")
    now = utcnow()
    ticket = _new_ticket(ticket_id, data, now)
    session.add(ticket)
    session.flush()
    sla.refresh(session, ticket, now, previous_status=None)
    extra = {}
    if data.get("requester"):
        extra["requester"] = {"email": ticket.requester_email, "name": ticket.requester_name}
    record_ticket_event(session, "ticket.created", ticket, **extra)
    if ticket.assignee_id:
        record_assigned(session, ticket, None)
    return ticket


def record_assigned(session: Session, ticket: Ticket, previous_assignee_id: str | None) -> None:
    """`ticket.assigned`: who has the ticket now (None: nobody) and who had it."""
    record_ticket_event(
        session,
        "ticket.assigned",
        ticket,
        assignee_id=ticket.assignee_id,
        previous_assignee_id=previous_assignee_id,
    )


def check_move(ticket: Ticket, target: str) -> None:
    """409 unless the ticket may move from its status to `target`."""
    allowed = TRANSITIONS[ticket.status]
    if target in allowed:
        return
    if ticket.status == "closed":
        raise conflict("A closed ticket is final: open a new ticket instead")
    choices = ", ".join(allowed)
    raise conflict(
        f"A ticket cannot move from {ticket.status} to {target}; from {ticket.status} it may "
        f"move to {choices}",
        {"status": [f"From {ticket.status} a ticket may move to {choices}."]},
    )


def apply_move(ticket: Ticket, target: str, now: datetime) -> None:
    """Put the ticket in `target` (already checked) with the bookkeeping of that move."""
    if ticket.status == "resolved" and target == "open":
        ticket.reopened_count += 1
        ticket.resolved_at = None
    if target == "resolved":
        ticket.resolved_at = now
    if target == "closed":
        ticket.closed_at = now
    ticket.status = target


def record_status_events(
    session: Session, ticket: Ticket, previous_status: str, settings: Settings | None = None
) -> None:
    """`ticket.status_changed`, plus `ticket.resolved` or `ticket.reopened` when they apply."""
    if ticket.status == previous_status:
        return
    moved = {"from": previous_status, "to": ticket.status}
    record_ticket_event(session, "ticket.status_changed", ticket, **moved)
    if ticket.status == "resolved":
        # The CSAT request email links to the rating page with this token.
        token = csat.csat_token(settings, ticket.id) if settings is not None else None
        record_ticket_event(session, "ticket.resolved", ticket, csat_token=token)
    elif previous_status == "resolved" and ticket.status == "open":
        record_ticket_event(session, "ticket.reopened", ticket)


def _edits(ticket: Ticket, changes: Mapping[str, Any]) -> dict[str, Any]:
    """The editable fields the change gives a new value."""
    edits = {}
    for name in EDITABLE_FIELDS:
        if name not in changes:
            continue
        value = changes[name].strip() if name == "subject" else changes[name]
        if getattr(ticket, name) != value:
            edits[name] = value
    return edits


def _assignee(ticket: Ticket, changes: Mapping[str, Any]) -> Any:
    """The new assignee (None: unassigned), or UNCHANGED."""
    if "assignee_id" not in changes or changes["assignee_id"] == ticket.assignee_id:
        return UNCHANGED
    return changes["assignee_id"]


def _target(ticket: Ticket, changes: Mapping[str, Any], assignee: Any) -> str:
    """Where the change takes the ticket: the status asked for, else `open` for a new
    ticket that gets an assignee (someone works on it now), else where it is."""
    if changes.get("status"):
        return changes["status"]
    if ticket.status == "new" and assignee not in (UNCHANGED, None):
        return "open"
    return ticket.status


def update_ticket(
    session: Session,
    ticket: Ticket,
    changes: Mapping[str, Any],
    *,
    settings: Settings | None,
    expected_version: int | None = None,
) -> Ticket:
    """Apply a partial change (fields, assignee, status) as one new version with its events.

    A change that changes nothing is no new version. A closed ticket cannot change (409),
    nor can a ticket move where TRANSITIONS does not lead (409). `settings` signs the
    CSAT token of `ticket.resolved` (None: the event carries no token).
    """
    check_version(ticket.version, expected_version)
    edits, assignee = _edits(ticket, changes), _assignee(ticket, changes)
    target = _target(ticket, changes, assignee)
    if not edits and assignee is UNCHANGED and target == ticket.status:
        return ticket
    if ticket.status == "closed":
        raise conflict("A closed ticket is final: open a new ticket instead")
    if target != ticket.status:
        check_move(ticket, target)
    now = utcnow()
    previous_status, previous_assignee = ticket.status, ticket.assignee_id
    for name, value in edits.items():
        setattr(ticket, name, value)
    if assignee is not UNCHANGED:
        ticket.assignee_id = assignee
    apply_move(ticket, target, now)
    touch(ticket, now)
    if target != previous_status or "priority" in edits:
        sla.refresh(session, ticket, now, previous_status=previous_status)
    if edits:
        record_ticket_event(session, "ticket.updated", ticket, changed=list(edits))
    if assignee is not UNCHANGED:
        record_assigned(session, ticket, previous_assignee)
    record_status_events(session, ticket, previous_status, settings)
    return ticket


def assign_ticket(
    session: Session,
    ticket: Ticket,
    assignee_id: str | None,
    *,
    expected_version: int | None = None,
) -> Ticket:
    """Give the ticket to an agent (None: unassign); a new ticket becomes open."""
    changes = {"assignee_id": assignee_id}
    return update_ticket(session, ticket, changes, settings=None, expected_version=expected_version)


def delete_ticket(session: Session, ticket: Ticket, *, expected_version: int | None = None) -> None:
    """Delete a ticket with its comments and rating; records `ticket.deleted`."""
    check_version(ticket.version, expected_version)
    touch(ticket, utcnow())
    record_ticket_event(session, "ticket.deleted", ticket)
    session.delete(ticket)
