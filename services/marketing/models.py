"""What the marketing service stores: the contact replica and engagement facts, segments,
consent (subscriptions, its ledger, suppressions), campaigns and automations.

Each part of the service adds its tables below its own heading, on the one `Base`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Numeric, String, Text, event, text
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
    # Open tickets whose SLA was breached (reports.py's at-risk customers).
    tickets_breached: Mapped[int] = mapped_column(default=0)
    # The contact's deals still open (status open): automations' conditions read it.
    deals_open: Mapped[int] = mapped_column(default=0)
    erased: Mapped[bool] = mapped_column(default=False)
    # Set when this contact was merged into another: a tombstone that points on, so late
    # events about the duplicate neither bring it back nor lose their facts.
    merged_into: Mapped[str | None] = mapped_column(String(36))
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


class ContactFact(Base):
    """One engagement fact about a contact (an email opened or clicked, a deal won, a ticket
    open), keyed by what it is about, so redelivered or reordered events count it once."""

    __tablename__ = "contact_facts"

    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    contact_id: Mapped[str | None] = mapped_column(String(36))
    active: Mapped[bool] = mapped_column(default=True)
    version: Mapped[int] = mapped_column(default=0)

    __table_args__ = (Index("ix_contact_facts_contact_kind", "contact_id", "kind"),)


# --- segments (segments.py) -----------------------------------------------------------------


class Segment(Base):
    """A named group of contacts: dynamic (a filter over the replica, evaluated when asked)
    or static (the contacts added to it by hand)."""

    __tablename__ = "segments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(1000))
    kind: Mapped[str] = mapped_column(String(10))
    # The filter groups of API.md's search language (dynamic segments only).
    filter: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_segments_created_id", "created_at", "id"),)


class SegmentMember(Base):
    """A contact added to a static segment."""

    __tablename__ = "segment_members"

    segment_id: Mapped[str] = mapped_column(
        ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[str] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    added_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_segment_members_contact", "contact_id"),)


# --- consent: mailing lists, subscriptions, the consent ledger, suppressions (consent.py) ---


class SubscriptionList(Base):
    """A mailing list people subscribe to (the newsletter, product news, ...)."""

    __tablename__ = "subscription_lists"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(String(1000))
    # Subscribing needs the person's confirmation through a link mailed to them.
    double_opt_in: Mapped[bool] = mapped_column(default=False)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Subscription(Base):
    """One contact's consent to one list: subscribed, unsubscribed or pending confirmation."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    contact_id: Mapped[str] = mapped_column(String(36))
    list_id: Mapped[str] = mapped_column(
        ForeignKey("subscription_lists.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(30))
    # When the consent now in force was given; None unless subscribed.
    consented_at: Mapped[datetime | None] = mapped_column()
    # The nonce of the last confirmation link mailed (pending only): older links are void.
    confirmation_nonce: Mapped[str | None] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("uq_subscriptions_contact_list", "contact_id", "list_id", unique=True),)


class ConsentRecord(Base):
    """One line of the append-only consent ledger: who consented to (or withdrew from)
    what, when and how. No foreign keys: the ledger outlives lists and contacts; an
    erasure blanks the person's fields and keeps the anonymous fact."""

    __tablename__ = "consent_records"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    contact_id: Mapped[str | None] = mapped_column(String(36), index=True)
    email: Mapped[str | None] = mapped_column(String(254), index=True)  # lower-cased
    list_id: Mapped[str | None] = mapped_column(String(36), index=True)  # None: every list
    list_name: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(30))
    source: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str | None] = mapped_column(String(20))  # a suppression's reason
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Suppression(Base):
    """An address no marketing mail may reach. Keyed by the SHA-256 of the lower-cased
    address, so an erased person's row keeps only the hash (`email` None)."""

    __tablename__ = "suppressions"

    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(254), index=True)  # lower-cased
    reason: Mapped[str] = mapped_column(String(20), index=True)
    source: Mapped[str] = mapped_column(String(30))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- campaigns (campaigns.py, campaign_fanout.py, campaign_stats.py) -------------------------


class Campaign(Base):
    """An email to a segment: its content, where it is in its life (draft, scheduled,
    sending, sent, cancelled), the fan-out's claim, and its counters."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    # No foreign keys: a segment or list deleted later leaves the campaign's history intact.
    segment_id: Mapped[str] = mapped_column(String(36), index=True)
    list_id: Mapped[str | None] = mapped_column(String(36))
    subject: Mapped[str | None] = mapped_column(String(1000))
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    template: Mapped[str | None] = mapped_column(String(200))
    sender: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20))
    scheduled_at: Mapped[datetime | None] = mapped_column()
    launched_at: Mapped[datetime | None] = mapped_column()
    frozen_at: Mapped[datetime | None] = mapped_column()  # recipients chosen
    sent_at: Mapped[datetime | None] = mapped_column()
    cancelled_at: Mapped[datetime | None] = mapped_column()
    # The fan-out's lease: one worker at a time, taken again once it runs out.
    claim_token: Mapped[str | None] = mapped_column(String(36))
    claimed_until: Mapped[datetime | None] = mapped_column()
    recipients_count: Mapped[int] = mapped_column(default=0)
    requested_count: Mapped[int] = mapped_column(default=0)
    sent_count: Mapped[int] = mapped_column(default=0)
    opened_count: Mapped[int] = mapped_column(default=0)
    clicked_count: Mapped[int] = mapped_column(default=0)
    bounced_count: Mapped[int] = mapped_column(default=0)
    failed_count: Mapped[int] = mapped_column(default=0)
    unsubscribed_count: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_campaigns_created_id", "created_at", "id"),
        Index("ix_campaigns_status_scheduled", "status", "scheduled_at"),
    )


class CampaignRecipient(Base):
    """One contact a campaign goes to, frozen when its fan-out starts, and what became of
    the email (each moment set once, so a repeated event counts once)."""

    __tablename__ = "campaign_recipients"

    campaign_id: Mapped[str] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # pending, requested, skipped (unreachable when its turn came), cancelled, sent,
    # failed, bounced.
    status: Mapped[str] = mapped_column(String(20))
    # The email's message id is uuid5(campaign_id, contact_id): derived, never stored.
    requested_at: Mapped[datetime | None] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()
    opened_at: Mapped[datetime | None] = mapped_column()
    clicked_at: Mapped[datetime | None] = mapped_column()
    bounced_at: Mapped[datetime | None] = mapped_column()
    failed_at: Mapped[datetime | None] = mapped_column()
    unsubscribed_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        # The fan-out's work list: only pending rows, so marking a chunk requested only
        # takes them out of the index.
        Index(
            "ix_campaign_recipients_pending",
            "campaign_id",
            "contact_id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("ix_campaign_recipients_contact", "contact_id"),
    )


# --- reports (reports.py) -------------------------------------------------------------------


class ContactStage(Base):
    """A contact's lifecycle stage at one of its versions, and when that version happened:
    the stage at time t is the stage of the newest version that occurred by t. Ids, stages
    and times only (no personal data). `stage` None: no stage, or (at version 2**31 - 1) the
    contact's end, merged into another or erased (stage_history.py)."""

    __tablename__ = "contact_stages"

    contact_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    stage: Mapped[str | None] = mapped_column(String(20))
    occurred_at: Mapped[datetime] = mapped_column()

    __table_args__ = (Index("ix_contact_stages_stage_occurred", "stage", "occurred_at"),)


# Engagement over time counts recipients' moments within a period: read them by index.
# Partial (moments that happened only): every change of a recipient row is a new row
# version in PostgreSQL, and a full index would take an entry for each, null or not, which
# slowed the campaign fan-out's recipient updates by a fifth.
for _moment in ("sent_at", "opened_at", "clicked_at", "bounced_at", "unsubscribed_at"):
    _column = getattr(CampaignRecipient, _moment)
    Index(
        f"ix_campaign_recipients_{_moment}",
        _column,
        postgresql_where=_column.is_not(None),
        sqlite_where=_column.is_not(None),
    )


# --- automations (automations.py) -----------------------------------------------------------


class AutomationRule(Base):
    """When an event (or the synthetic `contact.inactive`) meets the conditions, do the
    actions for its contact, at once or `delay_seconds` later. Ships disabled."""

    __tablename__ = "automation_rules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(1000))
    event_type: Mapped[str] = mapped_column(String(64))
    # The filter groups of API.md's search language over data.<field> and contact.<field>.
    conditions: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    inactive_days: Mapped[int | None] = mapped_column()  # contact.inactive only
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    delay_seconds: Mapped[int] = mapped_column(default=0)
    enabled: Mapped[bool] = mapped_column(default=False)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_automation_rules_type_enabled", "event_type", "enabled"),
        Index("ix_automation_rules_created_id", "created_at", "id"),
    )


class AutomationRun(Base):
    """One firing of a rule for one trigger (an event, or a contact's inactivity since a
    moment): unique per (rule, trigger key), so nothing fires a rule twice for it."""

    __tablename__ = "automation_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    rule_id: Mapped[str] = mapped_column(ForeignKey("automation_rules.id", ondelete="CASCADE"))
    trigger_key: Mapped[str] = mapped_column(String(120))
    event_type: Mapped[str] = mapped_column(String(64))
    contact_id: Mapped[str | None] = mapped_column(String(36), index=True)
    status: Mapped[str] = mapped_column(String(20))  # scheduled, done, skipped, failed
    reason: Mapped[str | None] = mapped_column(String(1000))
    due_at: Mapped[datetime | None] = mapped_column()
    ran_at: Mapped[datetime | None] = mapped_column()
    actions_done: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # contact.inactive: the moment the contact has been inactive since (its trigger).
    inactive_since: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("uq_automation_runs_rule_trigger", "rule_id", "trigger_key", unique=True),
        Index("ix_automation_runs_rule_created", "rule_id", "created_at", "id"),
        # The delay timer's work list: only scheduled runs.
        Index(
            "ix_automation_runs_scheduled",
            "due_at",
            postgresql_where=text("status = 'scheduled'"),
            sqlite_where=text("status = 'scheduled'"),
        ),
    )


@event.listens_for(AutomationRule.__table__, "after_create")
def _install_default_rules(target: Any, connection: Any, **_: Any) -> None:
    """The shipped (disabled) rules, made with the table (`create_all`; 0004 does the same)."""
    from services.marketing.automation_defaults import install_default_rules

    install_default_rules(connection, target)
