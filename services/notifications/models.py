"""What the notifications service stores: templates, the delivery log, reminders, webhooks."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.events import utcnow

CATEGORIES = ("transactional", "marketing")
MESSAGE_STATUSES = ("queued", "sending", "sent", "failed", "bounced")
REMINDER_STATUSES = ("scheduled", "sent", "cancelled")
DELIVERY_STATUSES = ("pending", "delivered", "failed")


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


class Template(Base):
    """A subject and bodies with Jinja2 variables, rendered in a sandbox."""

    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    subject: Mapped[str] = mapped_column(String(1000))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(20), default="transactional")
    description: Mapped[str | None] = mapped_column(String(1000))
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    """One email and its delivery: queued -> sending -> sent | failed | bounced.

    `id` is the message id other services name (or one derived from the requesting
    event): a second request with the same id is the same message, never a second email.
    `sending_started_at` is written and committed before the SMTP conversation, so a
    crash between the server's acceptance and the log update is found after a restart
    and reconciled instead of resent. Each conversation has its own marks, committed as
    it goes: `smtp_started_at` before it may begin (cleared if the server refuses the
    message), `submitted_at` once the server accepted it. So after a crash a `sending`
    message is known to be sent, never begun, or (the one in the conversation) in doubt.
    """

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    to_address: Mapped[str] = mapped_column(String(254))
    to_key: Mapped[str] = mapped_column(String(254), index=True)  # lower-cased
    from_address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(1000))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(20), default="transactional")
    template_id: Mapped[str | None] = mapped_column(String(36))
    contact_id: Mapped[str | None] = mapped_column(String(36), index=True)
    campaign_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # What caused it: the event (type and id) that asked for it, if any.
    cause_event_id: Mapped[str | None] = mapped_column(String(36))
    cause_event_type: Mapped[str | None] = mapped_column(String(128))
    # Extra headers (List-Unsubscribe for marketing mail...).
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(10), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(2000))
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    sending_started_at: Mapped[datetime | None] = mapped_column()
    smtp_started_at: Mapped[datetime | None] = mapped_column()
    submitted_at: Mapped[datetime | None] = mapped_column()
    smtp_message_id: Mapped[str | None] = mapped_column(String(300), unique=True)
    sent_at: Mapped[datetime | None] = mapped_column()
    failed_at: Mapped[datetime | None] = mapped_column()
    opened_at: Mapped[datetime | None] = mapped_column()
    open_count: Mapped[int] = mapped_column(default=0)
    click_count: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_messages_created_id", "created_at", "id"),
        # The sender's claim: queued messages whose next attempt is due.
        Index("ix_messages_status_next", "status", "next_attempt_at"),
    )


class Click(Base):
    """One followed link of a message (each click is published)."""

    __tablename__ = "clicks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2000))
    clicked_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_clicks_message", "message_id", "clicked_at"),)


# Tracked link ids: uuid5(this namespace, "<message id> <url>"), so the sender can name a
# message's stored links as it instruments the HTML, without reading them back.
LINK_NAMESPACE = uuid.UUID("6b1e0f3a-9c47-4d2b-8e15-3a7f0c9d4b62")


def tracked_link_id(message_id: str, url: str) -> str:
    """The id of the tracked link of a message to `url`."""
    return str(uuid.uuid5(LINK_NAMESPACE, f"{message_id} {url}"))


class TrackedLink(Base):
    """A URL a message links to, stored when it is queued: the only places the click
    redirect leads (its token names the row, never a URL)."""

    __tablename__ = "tracked_links"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Suppression(Base):
    """An address marketing mail must never reach (unsubscribed, hard bounce, erased)."""

    __tablename__ = "suppressions"

    email_key: Mapped[str] = mapped_column(String(254), primary_key=True)
    reason: Mapped[str] = mapped_column(String(30))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Reminder(Base):
    """A task's reminder, sent by the worker at its due time unless the task was done."""

    __tablename__ = "reminders"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    task_id: Mapped[str] = mapped_column(String(36), unique=True)
    owner_id: Mapped[str | None] = mapped_column(String(36), index=True)
    recipient: Mapped[str | None] = mapped_column(String(254))
    title: Mapped[str] = mapped_column(String(300))
    due_at: Mapped[datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(10), default="scheduled")
    fired_at: Mapped[datetime | None] = mapped_column()
    message_id: Mapped[str | None] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_reminders_status_due", "status", "due_at"),)


class Webhook(Base):
    """An integration's subscription: matching events are POSTed to `url`, HMAC-signed."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2000))
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    disabled_at: Mapped[datetime | None] = mapped_column()
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook, with its attempts: pending -> delivered | failed."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(2000))
    delivered_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_event"),
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_created", "webhook_id", "created_at", "id"),
    )


class ContactAddress(Base):
    """Where a contact is reached: a replica of the contacts service's email and name,
    kept from `contact.*` events (newest `aggregate_version` wins)."""

    __tablename__ = "contact_addresses"

    contact_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(254))
    name: Mapped[str | None] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class UserAddress(Base):
    """Where a staff user is reached: a replica of the gateway's users (email, name, active),
    kept from `user.*` events (newest `aggregate_version` wins; a deleted user stays as a
    tombstone without an address, so a late event cannot bring them back)."""

    __tablename__ = "user_addresses"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(254))
    name: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    version: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PendingEvent(Base):
    """An event a handler could not finish yet: it waits for another aggregate's data (a
    contact's address, say) and is handled again when that arrives (`waiting`)."""

    __tablename__ = "pending_events"
    __table_args__ = (Index("ix_pending_events_waits_for_key", "waits_for", "key"),)

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    waits_for: Mapped[str] = mapped_column(String(20))  # "contact"
    key: Mapped[str] = mapped_column(String(36))  # the id of what it waits for
    envelope: Mapped[str] = mapped_column(Text)  # the event as JSON, handled again as it was
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
