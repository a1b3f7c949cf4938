"""The worker's SLA sweep: warnings at 80% and breaches, each published once.

Every pass claims due alerts in batches with one UPDATE per batch whose candidate rows
come from `SELECT ... FOR UPDATE SKIP LOCKED`: sweeps running in several worker replicas
take disjoint rows and never wait for each other (or for an API request holding a ticket).
The UPDATE sets the alert's stamp (`*_warned_at` / `*_breached_at`, and `sla_breached`)
and bumps the version; the events go into the outbox in the same transaction, so an alert
is published exactly once. SQLite ignores the row locks: there the UPDATE takes the single
write lock first, which serialises sweeps just as well.

What is swept:
- resolution alerts of new and open tickets (pending ones are paused: their
  `resolution_due_at` is null, see services/support/sla.py);
- first-response alerts of new, open and pending tickets without a first response (pending
  does not pause the first-response clock).
A breach found before its warning was sent is published alone: the warning is skipped for
good (it would arrive after the fact).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from services.support.models import OPEN_STATUSES, Ticket
from services.support.sla import RUNNING_STATUSES, as_utc, record_alert
from shared.db import Database, no_lock_wait, take_write_lock
from shared.events import utcnow

log = logging.getLogger(__name__)

BATCH_SIZE = 200


@dataclass(frozen=True)
class Alert:
    """One kind of alert: a target's warning or breach, and where its state lives."""

    event_type: str
    target: str
    moment: str  # the column holding when the alert is due
    stamp: str  # the column saying it was published

    def column(self, name: str) -> InstrumentedAttribute[Any]:
        return getattr(Ticket, name)


ALERTS = (
    # Breaches first: a warning whose breach is found in the same pass is skipped.
    Alert(
        "ticket.sla_breached",
        "first_response",
        "first_response_due_at",
        "first_response_breached_at",
    ),
    Alert("ticket.sla_breached", "resolution", "resolution_due_at", "resolution_breached_at"),
    Alert(
        "ticket.sla_warning", "first_response", "first_response_warn_at", "first_response_warned_at"
    ),
    Alert("ticket.sla_warning", "resolution", "resolution_warn_at", "resolution_warned_at"),
)


def sweep_sla(db: Database, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Publish due SLA warnings and breaches; how many were published."""
    now = as_utc(now) or utcnow()
    published = 0
    for alert in ALERTS:
        while True:
            with db.session() as session:
                count = claim_and_publish(session, alert, now, batch_size)
            published += count
            if count < batch_size:
                break
    if published:
        log.info("SLA sweep published %d alert(s)", published)
    return published


def due_condition(alert: Alert, now: datetime) -> list[Any]:
    """The WHERE clauses of tickets for which this alert is due and not yet published."""
    statuses = OPEN_STATUSES if alert.target == "first_response" else RUNNING_STATUSES
    clauses = [
        Ticket.status.in_(statuses),
        alert.column(alert.moment) <= now,
        alert.column(alert.stamp).is_(None),
    ]
    if alert.target == "first_response":
        clauses.append(Ticket.first_responded_at.is_(None))
    if alert.event_type == "ticket.sla_warning":
        breached = alert.column(f"{alert.target}_breached_at")
        due = alert.column(f"{alert.target}_due_at")
        clauses += [breached.is_(None), or_(due.is_(None), due > now)]
    return clauses


def claim_and_publish(session: Session, alert: Alert, now: datetime, limit: int) -> int:
    """Claim up to `limit` tickets due for this alert, stamp them and record the events.

    The due tickets are locked and read first, then stamped: an `IN (SELECT ... LIMIT n FOR
    UPDATE SKIP LOCKED)` inside an UPDATE may be re-run by PostgreSQL per row scanned.
    """
    conditions = due_condition(alert, now)
    if session.scalar(select(Ticket.id).where(*conditions).limit(1)) is None:
        return 0  # nothing due: no lock taken (SQLite has only one)
    take_write_lock(session)
    with no_lock_wait(session):
        tickets = list(
            session.scalars(
                select(Ticket)
                .where(*conditions)
                .order_by(alert.column(alert.moment), Ticket.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
    for ticket in tickets:
        setattr(ticket, alert.stamp, now)
        ticket.version += 1
        if alert.event_type == "ticket.sla_breached":
            ticket.sla_breached = True
        record_alert(session, ticket, alert.event_type, alert.target)
    return len(tickets)
