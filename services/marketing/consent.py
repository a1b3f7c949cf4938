"""Consent: what marketing may send to whom, and the events that change it.

The parts: `subscriptions` (lists, statuses, double opt-in, unsubscribe links), `ledger`
(who consented to what, when, how), `suppressions` (addresses no marketing mail reaches).
This module reacts to other services' events and is what campaigns use:

- A hard bounce (`email.bounced` with hard true, data `to` or `email`) suppresses the
  address as "bounced" and unsubscribes the open rows of its contacts (source bounce,
  each with `subscription.changed`); a soft one changes nothing; one without an address
  is a PermanentError (dead-lettered). Applying it again changes nothing.
- `forget_contact` (erasure, called by the replica on `contact.erased`) deletes the
  person's subscriptions, blanks their ledger lines, redacts their events in the outbox,
  drops remembered answers showing them, and keeps each of their addresses suppressed as
  "erased" (its hash only).
- For campaigns: `unsubscribed_or_suppressed_condition` / `subscribed_condition` (SQL on
  the contact replica) choose recipients; `is_suppressed` / `suppressed_among` check the
  final addresses (they also know erased ones, which SQL cannot match).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from services.marketing import subscriptions, suppressions
from services.marketing.ledger import Origin, anonymise
from services.marketing.models import ConsentRecord, Contact, Subscription
from services.marketing.subscriptions import SUBSCRIBED, default_list
from services.marketing.suppressions import is_suppressed, suppressed_among
from shared.bus import Handler, PermanentError
from shared.config import Settings
from shared.db import take_write_lock
from shared.events import Envelope
from shared.idempotency import forget_resource
from shared.outbox import redact_aggregate

log = logging.getLogger(__name__)

BOUNCE, ERASURE = "bounce", "erasure"
MAX_EMAIL_CHARS = 254

__all__ = [
    "default_list",
    "forget_contact",
    "handlers",
    "is_suppressed",
    "subscribed_condition",
    "suppressed_among",
    "unsubscribed_or_suppressed_condition",
]


# --- what campaigns leave out -------------------------------------------------------------


def unsubscribed_or_suppressed_condition(
    contact_id: ColumnElement[Any], email_key: ColumnElement[Any], list_id: str | None = None
) -> ColumnElement[bool]:
    """SQL, on the contact replica's columns: true for a contact a campaign must leave out,
    because the address is suppressed or (given a list) the contact's row for that list
    is not subscribed (unsubscribed, or still awaiting confirmation).

    Contacts without a row for the list are not left out (a list without double opt-in
    reaches its segment); use `subscribed_condition` to reach only the subscribed. Erased
    addresses are kept as hashes SQL cannot match: check recipients with
    `suppressed_among` before sending.
    """
    left_out = suppressions.suppressed_condition(email_key)
    if list_id is None:
        return left_out
    not_consenting = exists().where(
        Subscription.contact_id == contact_id,
        Subscription.list_id == list_id,
        Subscription.status != SUBSCRIBED,
    )
    return or_(left_out, not_consenting)


def subscribed_condition(contact_id: ColumnElement[Any], list_id: str) -> ColumnElement[bool]:
    """SQL: the contact is subscribed (and confirmed) to the list."""
    return exists().where(
        Subscription.contact_id == contact_id,
        Subscription.list_id == list_id,
        Subscription.status == SUBSCRIBED,
    )


# --- bounces and erasure ------------------------------------------------------------------


def _valid_email(value: Any) -> str | None:
    if isinstance(value, str) and "@" in value and len(value.strip()) <= MAX_EMAIL_CHARS:
        return value.strip()
    return None


def on_email_bounced(session: Session, event: Envelope) -> None:
    """A hard bounce suppresses the address and unsubscribes its contacts; soft: nothing."""
    if event.data.get("hard") is not True:
        return
    email = _valid_email(event.data.get("to")) or _valid_email(event.data.get("email"))
    if email is None:
        raise PermanentError("email.bounced needs data.to or data.email (an address)")
    key = suppressions.email_key(email)
    origin = Origin(BOUNCE)
    take_write_lock(session)
    # Only contacts whose address it still is: one who moved to another keeps their lists.
    contact_ids = list(session.scalars(select(Contact.id).where(Contact.email_key == key)))
    named = contact_ids[0] if len(contact_ids) == 1 else None
    suppressions.suppress(
        session, key, suppressions.BOUNCED, origin, contact_id=named, since=event.occurred_at
    )
    subscriptions.unsubscribe_rows(
        session, subscriptions.open_rows(session, contact_ids), key, origin
    )


def forget_contact(session: Session, contact_id: str, email: str | None) -> None:
    """Right to be forgotten: drop the person's consent data, keep the address suppressed."""
    take_write_lock(session)
    keys = {suppressions.email_key(email)} if email and email.strip() else set()
    keys.update(
        session.scalars(
            select(ConsentRecord.email)
            .where(ConsentRecord.contact_id == contact_id, ConsentRecord.email.is_not(None))
            .distinct()
        )
    )
    theirs = select(Subscription.id).where(Subscription.contact_id == contact_id)
    for subscription_id in list(session.scalars(theirs)):
        kept = {"subscription_id": subscription_id, "contact_id": contact_id}
        redact_aggregate(session, subscription_id, keep=kept)
        forget_resource(session, subscription_id)
    session.execute(delete(Subscription).where(Subscription.contact_id == contact_id))
    redact_aggregate(session, contact_id, keep={"contact_id": contact_id})
    anonymise(session, contact_id, keys)
    for key in sorted(keys):
        suppressions.suppress(session, key, suppressions.ERASED, Origin(ERASURE))
        _forget_answers(session, key)
    log.info("forgot the consent of a contact (%d address(es) kept suppressed)", len(keys))


def _forget_answers(session: Session, key: str) -> None:
    """Drop remembered POST answers that show the address (a suppression's, by hand)."""
    table = session.info["db"].idempotency
    session.execute(delete(table).where(table.c.body.contains(key, autoescape=True)))


def handlers(settings: Settings) -> dict[str, Handler]:
    """The events consent reacts to."""
    return {"email.bounced": on_email_bounced}
