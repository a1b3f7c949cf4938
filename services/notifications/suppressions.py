"""Suppressions: the addresses marketing mail must never reach, kept from events.

- `subscription.changed` (data: email, status, source, list_id, all_lists): "unsubscribed"
  from every list (`all_lists: true`, or no `list_id`) suppresses the address; leaving one
  list does not (marketing leaves that list's unsubscribers out of its campaigns).
  "subscribed" through double opt-in (`source` "double_opt_in", or `double_opt_in: true`)
  lifts an "unsubscribed" suppression, and only that: a hard bounce or an erasure stays.
  A subscription without confirmation lifts nothing.
- `email.bounced` with `hard: true` (data: to or email, or a message_id of ours)
  suppresses the address as "bounced".

One row per address (lower-cased), holding the strongest reason: bounced and erased
outrank unsubscribed. Its `created_at` is when the suppression took effect (the event's
time), so a re-subscription older than the unsubscription it meets lifts nothing.

This is the notifications service's own copy, checked before every marketing send; the
public list of suppressions and subscriptions is the marketing service's.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.notifications.models import ContactAddress, Message, Suppression
from shared.bus import Handler, PermanentError
from shared.config import Settings
from shared.events import Envelope

log = logging.getLogger(__name__)

UNSUBSCRIBED, BOUNCED = "unsubscribed", "bounced"
# A reason may replace one of lower rank, never one of higher (erased comes from privacy).
RANK = {UNSUBSCRIBED: 1, BOUNCED: 2, "erased": 3}
DOUBLE_OPT_IN = "double_opt_in"
MAX_EMAIL_CHARS = 254


def email_key(email: str) -> str:
    """The form an address is suppressed under: trimmed, lower-cased."""
    return email.strip().lower()


def is_suppressed(session: Session, email: str) -> str | None:
    """Why marketing mail may not go to `email` ("unsubscribed", "bounced"...), or None."""
    if not isinstance(email, str) or not email.strip():
        return None
    row = session.get(Suppression, email_key(email))
    return row.reason if row is not None else None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def suppress(session: Session, email: str, reason: str, since: datetime) -> Suppression:
    """Suppress an address for `reason`, unless it is suppressed for a stronger one."""
    key = email_key(email)
    row = session.get(Suppression, key, with_for_update=True)
    if row is None:
        try:
            with session.begin_nested():
                row = Suppression(email_key=key, reason=reason, created_at=since)
                session.add(row)
            return row
        except IntegrityError:  # suppressed meanwhile by another consumer
            row = session.get(Suppression, key, with_for_update=True, populate_existing=True)
    if RANK.get(reason, 0) > RANK.get(row.reason, 0):
        row.reason, row.created_at = reason, since
    return row


def lift_unsubscription(session: Session, email: str, since: datetime) -> bool:
    """Lift an "unsubscribed" suppression older than `since`; others stay. Whether it did."""
    row = session.get(Suppression, email_key(email), with_for_update=True)
    if row is None or row.reason != UNSUBSCRIBED or _aware(row.created_at) > _aware(since):
        return False
    session.delete(row)
    return True


def _valid_email(value: Any) -> str | None:
    if isinstance(value, str) and "@" in value and len(value.strip()) <= MAX_EMAIL_CHARS:
        return value.strip()
    return None


def _subscriber_email(session: Session, data: dict[str, Any]) -> str:
    """The address a subscription event is about: its email, else its contact's."""
    email = _valid_email(data.get("email"))
    if email is None and isinstance(data.get("contact_id"), str):
        address = session.get(ContactAddress, data["contact_id"])
        email = _valid_email(address.email) if address is not None else None
    if email is None:
        raise PermanentError("subscription.changed needs data.email (an address)")
    return email


def _is_double_opt_in(data: dict[str, Any]) -> bool:
    source = data.get("source")
    if isinstance(source, str):
        source = source.strip().lower().replace("-", "_").replace(" ", "_")
    return source == DOUBLE_OPT_IN or data.get("double_opt_in") is True


def _from_every_list(data: dict[str, Any]) -> bool:
    return data.get("all_lists") is True or data.get("list_id") is None


def on_subscription_changed(session: Session, event: Envelope) -> None:
    """Unsubscribed: suppress. Subscribed by double opt-in: lift an unsubscription."""
    status = event.data.get("status")
    email = _subscriber_email(session, event.data)
    if status == UNSUBSCRIBED and _from_every_list(event.data):
        suppress(session, email, UNSUBSCRIBED, event.occurred_at)
    elif status == "subscribed" and _is_double_opt_in(event.data):
        lift_unsubscription(session, email, event.occurred_at)
    else:
        log.info("subscription.changed %s to %r: no suppression changes", event.id, status)


def _bounced_address(session: Session, data: dict[str, Any]) -> str | None:
    email = _valid_email(data.get("to")) or _valid_email(data.get("email"))
    if email is None and isinstance(data.get("message_id"), str):
        message = session.get(Message, data["message_id"])
        email = _valid_email(message.to_address) if message is not None else None
    return email


def on_email_bounced(session: Session, event: Envelope) -> None:
    """A hard bounce suppresses the address for good; a soft one changes nothing."""
    if event.data.get("hard") is not True:
        return
    email = _bounced_address(session, event.data)
    if email is None:
        raise PermanentError("email.bounced needs data.to, data.email or a known message_id")
    suppress(session, email, BOUNCED, event.occurred_at)


def handlers(settings: Settings) -> dict[str, Handler]:
    """The events that keep the suppression list."""
    return {
        "subscription.changed": on_subscription_changed,
        "email.bounced": on_email_bounced,
    }
