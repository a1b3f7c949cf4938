"""What the sales service stores: leads and their scoring, pipelines, deals, tasks."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Numeric,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.events import utcnow

LEAD_STATUSES = ("new", "working", "qualified", "unqualified", "converted")
# Leads still in play: a new lead with one of their emails is a duplicate.
OPEN_LEAD_STATUSES = ("new", "working", "qualified")
DEAL_STATUSES = ("open", "won", "lost")
BEHAVIOUR_KINDS = ("email_opened", "email_clicked", "form_submitted")

_OPEN_LEAD = text("status IN ('new', 'working', 'qualified') AND email_key IS NOT NULL")


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        date: Date,
        dict[str, Any]: JSON,
        Decimal: Numeric(14, 2),
    }


class Lead(Base):
    __tablename__ = "leads"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    email: Mapped[str | None] = mapped_column(String(254))
    # The lower-cased email: what de-duplication compares.
    email_key: Mapped[str | None] = mapped_column(String(254), index=True)
    phone: Mapped[str | None] = mapped_column(String(50))
    company_name: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(200))
    website: Mapped[str | None] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(50), default="api")
    message: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="new")
    # score = rule_points + behaviour_points, kept together so lists can sort by it.
    score: Mapped[int] = mapped_column(default=0)
    rule_points: Mapped[int] = mapped_column(default=0)
    behaviour_points: Mapped[int] = mapped_column(default=0)
    # The rules that matched when rule_points was last computed: the score's explanation.
    score_rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    owner_id: Mapped[str | None] = mapped_column(String(36), index=True)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    unqualified_reason: Mapped[str | None] = mapped_column(String(500))
    contact_id: Mapped[str | None] = mapped_column(String(36), index=True)
    deal_id: Mapped[str | None] = mapped_column(String(36))
    qualified_at: Mapped[datetime | None] = mapped_column()
    converted_at: Mapped[datetime | None] = mapped_column()
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_leads_created_id", "created_at", "id"),
        Index("ix_leads_status_created", "status", "created_at", "id"),
        Index("ix_leads_score_id", "score", "id"),
        # One open lead per email, enforced by the database even under concurrent captures.
        Index(
            "uq_leads_open_email",
            "email_key",
            unique=True,
            sqlite_where=_OPEN_LEAD,
            postgresql_where=_OPEN_LEAD,
        ),
    )


class LeadBehaviour(Base):
    """Points a lead earned by what they did (opened, clicked, submitted a form)."""

    __tablename__ = "lead_behaviours"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    lead_id: Mapped[str] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(30))
    points: Mapped[int] = mapped_column()
    # The event that earned the points: the same event never counts twice.
    event_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_lead_behaviours_lead", "lead_id", "occurred_at"),)


class ScoringRule(Base):
    """`field operator value` earns `points` (negative points too)."""

    __tablename__ = "scoring_rules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    field: Mapped[str] = mapped_column(String(64))
    operator: Mapped[str] = mapped_column(String(20))
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    points: Mapped[int] = mapped_column()
    active: Mapped[bool] = mapped_column(default=True)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_scoring_rules_created_id", "created_at", "id"),)


class SalesSetting(Base):
    """Service-wide settings changed through the API (the qualification threshold...)."""

    __tablename__ = "sales_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class FormSubmission(Base):
    """One public form post: what the per-client rate limit counts (across processes)."""

    __tablename__ = "form_submissions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # A keyed hash of the client address: enough to count, not an address kept.
    client_key: Mapped[str] = mapped_column(String(64))
    lead_id: Mapped[str | None] = mapped_column(String(36))
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_form_submissions_client_at", "client_key", "submitted_at"),)


class Pipeline(Base):
    __tablename__ = "pipelines"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    is_default: Mapped[bool] = mapped_column(default=False)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    stages: Mapped[list[Stage]] = relationship(
        order_by="Stage.position",
        cascade="all, delete-orphan",
        lazy="selectin",
        back_populates="pipeline",
    )


class Stage(Base):
    __tablename__ = "stages"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column()
    # Win probability in percent (0-100): weighted value = amount * probability / 100.
    probability: Mapped[int] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    pipeline: Mapped[Pipeline] = relationship(back_populates="stages")

    __table_args__ = (Index("ix_stages_pipeline_position", "pipeline_id", "position"),)


class Deal(Base):
    __tablename__ = "deals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    contact_id: Mapped[str | None] = mapped_column(String(36), index=True)
    company_id: Mapped[str | None] = mapped_column(String(36), index=True)
    lead_id: Mapped[str | None] = mapped_column(String(36), index=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id"))
    stage_id: Mapped[str] = mapped_column(ForeignKey("stages.id"))
    amount: Mapped[Decimal] = mapped_column(default=Decimal("0.00"))
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    expected_close_date: Mapped[date | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(10), default="open")
    lost_reason: Mapped[str | None] = mapped_column(String(500))
    owner_id: Mapped[str | None] = mapped_column(String(36), index=True)
    description: Mapped[str | None] = mapped_column(Text)
    stage_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column()
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_deals_created_id", "created_at", "id"),
        Index("ix_deals_stage_status", "stage_id", "status"),
        # Covers the closed-deal reports (won per month, win rate): no table look-ups.
        Index(
            "ix_deals_status_closed",
            "status",
            "closed_at",
            "pipeline_id",
            "owner_id",
            "currency",
            "amount",
        ),
        Index("ix_deals_pipeline_status", "pipeline_id", "status"),
    )


class DealTotal(Base):
    """Open deals summed by stage, owner, currency and expected close month.

    Kept in the same transaction as every deal change (services/sales/totals.py), so the
    pipeline and forecast reports read a few hundred rows whatever the number of deals.
    Empty strings stand for "no owner" and "no expected close date" (keys can't be NULL).
    """

    __tablename__ = "deal_totals"

    stage_id: Mapped[str] = mapped_column(
        ForeignKey("stages.id", ondelete="CASCADE"), primary_key=True
    )
    owner_key: Mapped[str] = mapped_column(String(36), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    close_month: Mapped[str] = mapped_column(String(7), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
    # Whole cents, an integer: SQLite keeps NUMERIC as floating point, and a running sum
    # of floats drifts; integer arithmetic is exact on every database.
    amount_cents: Mapped[int] = mapped_column(BigInteger, default=0)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(300))
    notes: Mapped[str | None] = mapped_column(Text)
    due_at: Mapped[datetime | None] = mapped_column()
    contact_id: Mapped[str | None] = mapped_column(String(36), index=True)
    deal_id: Mapped[str | None] = mapped_column(
        ForeignKey("deals.id", ondelete="SET NULL"), index=True
    )
    lead_id: Mapped[str | None] = mapped_column(String(36), index=True)
    owner_id: Mapped[str | None] = mapped_column(String(36))
    done: Mapped[bool] = mapped_column(default=False)
    completed_at: Mapped[datetime | None] = mapped_column()
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_tasks_owner_done_due", "owner_id", "done", "due_at"),
        Index("ix_tasks_created_id", "created_at", "id"),
    )


class ErasedContact(Base):
    """A tombstone: this contact was erased; late events about it change nothing."""

    __tablename__ = "erased_contacts"

    contact_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)
