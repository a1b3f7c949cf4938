"""What the marketing service stores: the contact replica and engagement facts, segments,
consent (subscriptions, its ledger, suppressions), campaigns and automations.

Each part of the service adds its tables below its own heading, on the one `Base`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.events import utcnow

__all__ = ["Base", "new_id", "utcnow"]


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


# --- the contact replica and engagement facts (replica.py) ----------------------------------


class Contact(Base):
    """A contact as segments see it: a replica of the contacts service's fields, kept from
    `contact.*` events (newest `aggregate_version` wins), plus engagement facts counted from
    other services' events. An erased contact's row keeps only its id (a tombstone)."""

    __tablename__ = "contacts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(254))
    # Lower-cased email: consent, suppressions and recipients compare this.
    email_key: Mapped[str | None] = mapped_column(String(254), index=True)
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    company_id: Mapped[str | None] = mapped_column(String(36), index=True)
    lifecycle_stage: Mapped[str | None] = mapped_column(String(20), index=True)
    owner_id: Mapped[str | None] = mapped_column(String(36), index=True)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lifetime_value: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal("0.00"))
    currency: Mapped[str | None] = mapped_column(String(3))
    last_activity_at: Mapped[datetime | None] = mapped_column(index=True)
    contact_created_at: Mapped[datetime | None] = mapped_column(index=True)
    emails_opened: Mapped[int] = mapped_column(default=0)
    emails_clicked: Mapped[int] = mapped_column(default=0)
    deals_won: Mapped[int] = mapped_column(default=0)
    tickets_open: Mapped[int] = mapped_column(default=0)
    erased: Mapped[bool] = mapped_column(default=False)
    version: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ContactTag(Base):
    """One tag of a replicated contact (a row each, so segments filter on tags in SQL)."""

    __tablename__ = "contact_tags"

    contact_id: Mapped[str] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(100), primary_key=True)

    __table_args__ = (Index("ix_contact_tags_tag", "tag"),)
