"""SLA clocks: deadlines from a policy's targets, business hours and pauses (to be written)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from services.support.models import Ticket


def refresh(
    session: Session, ticket: Ticket, now: datetime, previous_status: str | None = None
) -> None:
    """Recompute the ticket's SLA state after a create (previous_status None) or a change."""
