"""Suppressions: the addresses no marketing mail may reach, and how campaigns leave them out.

Reasons, weakest first: manual (an operator), unsubscribed (the person chose "all
lists"), complained and bounced (the mail system), erased (the right to be forgotten).
One row per address holds the strongest reason; a weaker one never replaces it, so an
operator's manual entry never hides a person's own unsubscription.

Rows are keyed by the SHA-256 of the trimmed, lower-cased address. The address is kept
beside it, except for "erased": then only the hash stays, enough to recognise the address
when it comes back (an old list imported again), not to read it.

Lifting (`lift`): a manual suppression by anyone who may write; any other reason only by
an admin who forces it (409 otherwise). An unsubscription is the person's to withdraw:
a confirmed double opt-in does that (`lift_unsubscription`).

For campaigns, both needed:
- `unsubscribed_or_suppressed_condition` (in consent.py) and `suppressed_condition`: SQL
  on the contact replica's columns, for choosing recipients. They match kept addresses,
  not the hashes of erased ones;
- `is_suppressed(session, email)` and `suppressed_among(session, emails)`: any address,
  erased ones included; check the final recipients with these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from services.marketing.ledger import Origin, record_consent
from services.marketing.models import Suppression
from shared.events import utcnow
from shared.web import conflict, not_found

MANUAL, UNSUBSCRIBED, COMPLAINED, BOUNCED, ERASED = (
    "manual",
    "unsubscribed",
    "complained",
    "bounced",
    "erased",
)
REASONS = (UNSUBSCRIBED, BOUNCED, COMPLAINED, ERASED, MANUAL)
RANK = {MANUAL: 1, UNSUBSCRIBED: 2, COMPLAINED: 3, BOUNCED: 3, ERASED: 4}
LIFTABLE = frozenset({MANUAL})
LOOKUP_BATCH = 500


def email_key(email: str) -> str:
    """The form an address is compared in: trimmed, lower-cased."""
    return email.strip().lower()


def email_hash(email: str) -> str:
    """The key a suppression is stored under: the SHA-256 (hex) of the address's key."""
    return hashlib.sha256(email_key(email).encode()).hexdigest()


def suppression_of(session: Session, email: str, *, lock: bool = False) -> Suppression | None:
    """The suppression of an address, if there is one (locked when asked)."""
    return session.get(Suppression, email_hash(email), with_for_update=lock)


def is_suppressed(session: Session, email: str | None) -> bool:
    """Whether marketing mail may not go to `email` (any reason, erased included)."""
    if not isinstance(email, str) or not email.strip():
        return False
    return suppression_of(session, email) is not None


def suppressed_among(session: Session, emails: Iterable[str]) -> set[str]:
    """Those of `emails` (as given) that are suppressed: one query per 500 addresses."""
    by_hash: dict[str, list[str]] = {}
    for email in emails:
        if isinstance(email, str) and email.strip():
            by_hash.setdefault(email_hash(email), []).append(email)
    hashes, found = list(by_hash), set()
    for start in range(0, len(hashes), LOOKUP_BATCH):
        batch = hashes[start : start + LOOKUP_BATCH]
        statement = select(Suppression.email_hash).where(Suppression.email_hash.in_(batch))
        for hit in session.scalars(statement):
            found.update(by_hash[hit])
    return found


def suppressed_condition(email_key_column: ColumnElement[Any]) -> ColumnElement[bool]:
    """SQL: the lower-cased address in this column is suppressed (erased hashes excepted)."""
    return exists().where(Suppression.email == email_key_column)


def _insert(
    session: Session, email: str, reason: str, source: str, since: datetime
) -> Suppression | None:
    """A new row, or None when another transaction made one meanwhile."""
    key = email_key(email)
    row = Suppression(
        email_hash=email_hash(key),
        email=None if reason == ERASED else key,
        reason=reason,
        source=source,
        created_at=since,
        updated_at=since,
    )
    try:
        with session.begin_nested():
            session.add(row)
        return row
    except IntegrityError:
        return None


def suppress(
    session: Session,
    email: str,
    reason: str,
    origin: Origin,
    *,
    contact_id: str | None = None,
    since: datetime | None = None,
) -> bool:
    """Suppress an address for `reason` unless held for one as strong; whether it changed.

    The change is written to the ledger, except an erasure's (it would name no one).
    """
    since = since or utcnow()
    row = suppression_of(session, email, lock=True)
    if row is None:
        row = _insert(session, email, reason, origin.source, since)
        if row is not None:
            _record_suppressed(session, email, reason, origin, contact_id, since)
            return True
        # Suppressed meanwhile by another transaction: compare with what it wrote.
        row = session.get(
            Suppression, email_hash(email), with_for_update=True, populate_existing=True
        )
        assert row is not None
    if RANK[reason] <= RANK.get(row.reason, 0):
        return False
    row.reason, row.source, row.updated_at = reason, origin.source, since
    if reason == ERASED:
        row.email = None
    _record_suppressed(session, email, reason, origin, contact_id, since)
    return True


def _record_suppressed(
    session: Session,
    email: str,
    reason: str,
    origin: Origin,
    contact_id: str | None,
    since: datetime,
) -> None:
    if reason == ERASED:
        return
    record_consent(
        session,
        contact_id=contact_id,
        email=email,
        sub_list=None,
        action="suppressed",
        origin=origin,
        reason=reason,
        when=since,
    )


def lift(session: Session, email: str, origin: Origin, *, force: bool = False) -> Suppression:
    """Lift a suppression: manual ones freely, others only when forced; 404 when none."""
    row = suppression_of(session, email, lock=True)
    if row is None:
        raise not_found("Suppression", email_key(email))
    if row.reason not in LIFTABLE and not force:
        raise conflict(
            f"The address is suppressed as {row.reason}: only an admin may lift that, "
            "with ?force=true",
            {"reason": [f"A suppression for {row.reason!r} is not lifted without force."]},
        )
    _lifted(session, row, email, origin)
    return row


def lift_unsubscription(session: Session, email: str, origin: Origin) -> bool:
    """Lift an "unsubscribed" suppression (the person subscribed again); whether it did."""
    row = suppression_of(session, email, lock=True)
    if row is None or row.reason != UNSUBSCRIBED:
        return False
    _lifted(session, row, email, origin)
    return True


def _lifted(session: Session, row: Suppression, email: str, origin: Origin) -> None:
    record_consent(
        session,
        contact_id=None,
        email=row.email,
        sub_list=None,
        action="suppression_lifted",
        origin=origin,
        reason=row.reason,
    )
    session.delete(row)
    session.flush()


def suppression_view(row: Suppression) -> dict[str, Any]:
    """A suppression as the API shows it (an erased one without its address)."""
    return {
        "email": row.email,
        "reason": row.reason,
        "source": row.source,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


__all__ = [
    "email_hash",
    "email_key",
    "is_suppressed",
    "lift",
    "lift_unsubscription",
    "suppress",
    "suppressed_among",
    "suppressed_condition",
    "suppression_of",
]
