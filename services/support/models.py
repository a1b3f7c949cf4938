"""What the support service stores: tickets, comments, SLA policies, CSAT ratings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.events import utcnow

CHANNELS = ("email", "web", "phone", "chat")
PRIORITIES = ("low", "normal", "high", "urgent")
STATUSES = ("new", "open", "pending", "resolved", "closed")
# Tickets whose SLA clocks may run: the others are paused (pending) or done.
OPEN_STATUSES = ("new", "open", "pending")


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


class SlaPolicy(Base):
    """Targets for one priority, in minutes of business time (or of wall time, 24/7).

    `calendar` is null for round the clock, else
    `{"timezone": "Europe/Berlin", "days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}`
    (days: Monday = 0).
    """

    __tablename__ = "sla_policies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    priority: Mapped[str] = mapped_column(String(10), unique=True)
    first_response_minutes: Mapped[int] = mapped_column()
    resolution_minutes: Mapped[int] = mapped_column()
    calendar: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    contact_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # Who wrote in, as given (a ticket from an unknown address names its new contact).
    requester_email: Mapped[str | None] = mapped_column(String(254))
    requester_name: Mapped[str | None] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(10), default="web")
    priority: Mapped[str] = mapped_column(String(10), default="normal")
    status: Mapped[str] = mapped_column(String(10), default="new")
    assignee_id: Mapped[str | None] = mapped_column(String(36), index=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)

    # --- SLA (services/support/sla.py keeps these) ---
    sla_policy_id: Mapped[str | None] = mapped_column(
        ForeignKey("sla_policies.id", ondelete="SET NULL")
    )
    # Business seconds the resolution clock ran before the current run (pauses excluded).
    sla_elapsed_seconds: Mapped[int] = mapped_column(default=0)
    # When the clock last (re)started; null while paused (pending) or stopped (done).
    sla_running_since: Mapped[datetime | None] = mapped_column()
    first_response_due_at: Mapped[datetime | None] = mapped_column()
    first_response_warn_at: Mapped[datetime | None] = mapped_column()
    resolution_due_at: Mapped[datetime | None] = mapped_column()
    resolution_warn_at: Mapped[datetime | None] = mapped_column()
    # Each alert is published once: the worker sets these in the transaction that records it.
    first_response_warned_at: Mapped[datetime | None] = mapped_column()
    first_response_breached_at: Mapped[datetime | None] = mapped_column()
    resolution_warned_at: Mapped[datetime | None] = mapped_column()
    resolution_breached_at: Mapped[datetime | None] = mapped_column()
    sla_breached: Mapped[bool] = mapped_column(default=False, index=True)

    first_responded_at: Mapped[datetime | None] = mapped_column()
    resolved_at: Mapped[datetime | None] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()
    reopened_count: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_tickets_created_id", "created_at", "id"),
        Index("ix_tickets_status_priority", "status", "priority"),
        # The SLA sweep's look-ups: open tickets by their next warning or deadline.
        Index("ix_tickets_first_response_warn", "first_response_warn_at"),
        Index("ix_tickets_first_response_due", "first_response_due_at"),
        Index("ix_tickets_resolution_warn", "resolution_warn_at"),
        Index("ix_tickets_resolution_due", "resolution_due_at"),
        Index("ix_tickets_resolved_at", "resolved_at"),
    )


class Comment(Base):
    """A public reply (the customer sees it) or an internal note (agents only)."""

    __tablename__ = "comments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    body: Mapped[str] = mapped_column(Text)
    public: Mapped[bool] = mapped_column(default=True)
    # "agent" (a user of the CRM) or "customer" (the requester, e.g. by email).
    author_kind: Mapped[str] = mapped_column(String(10), default="agent")
    author_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_comments_ticket_created", "ticket_id", "created_at", "id"),)


class CsatRating(Base):
    """The customer's rating of a resolved ticket: one per ticket."""

    __tablename__ = "csat_ratings"

    ticket_id: Mapped[str] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    rating: Mapped[int] = mapped_column()
    comment: Mapped[str | None] = mapped_column(Text)
    # The agent the ticket was assigned to when rated: reports per agent.
    assignee_id: Mapped[str | None] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ErasedContact(Base):
    """A tombstone: this contact was erased; late events about it change nothing."""

    __tablename__ = "erased_contacts"

    contact_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)
