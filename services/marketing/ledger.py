"""The consent ledger: an append-only record of who consented to what, when and how.

Every change of a subscription or a suppression appends one `ConsentRecord`: the contact,
the address at the time (lower-cased), the list (None: every list), the action reached
(subscribed, unsubscribed, pending, suppressed, suppression_lifted), its source, and for
a public request the client's IP and user agent; for an API call the caller's id. Rows are
never changed, except that an erasure blanks the person's fields (`anonymise`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from services.marketing.models import ConsentRecord, SubscriptionList, new_id
from shared.events import isoformat, utcnow

MAX_USER_AGENT_CHARS = 300


@dataclass(frozen=True)
class Origin:
    """Where a consent change came from: its source, and the request or caller behind it."""

    source: str
    ip: str | None = None
    user_agent: str | None = None
    actor_id: str | None = None


def record_consent(
    session: Session,
    *,
    contact_id: str | None,
    email: str | None,
    sub_list: SubscriptionList | None,
    action: str,
    origin: Origin,
    reason: str | None = None,
    when: datetime | None = None,
) -> ConsentRecord:
    """Append one line to the ledger (in the caller's transaction)."""
    record = ConsentRecord(
        id=new_id(),
        contact_id=contact_id,
        email=email.strip().lower() if email else None,
        list_id=sub_list.id if sub_list is not None else None,
        list_name=sub_list.name if sub_list is not None else None,
        action=action,
        source=origin.source,
        reason=reason,
        ip=origin.ip,
        user_agent=(origin.user_agent or "")[:MAX_USER_AGENT_CHARS] or None,
        actor_id=origin.actor_id,
        occurred_at=when or utcnow(),
    )
    session.add(record)
    return record


def anonymise(session: Session, contact_id: str, emails: Iterable[str]) -> None:
    """Blank the person, address, IP and user agent of someone's ledger lines (erasure)."""
    keys = sorted({email.lower() for email in emails if email})
    theirs = ConsentRecord.contact_id == contact_id
    if keys:
        theirs = or_(theirs, ConsentRecord.email.in_(keys))
    session.execute(
        update(ConsentRecord)
        .where(theirs)
        .values(contact_id=None, email=None, ip=None, user_agent=None)
        .execution_options(synchronize_session=False)
    )


def record_view(record: ConsentRecord) -> dict[str, Any]:
    """A ledger line as the API shows it."""
    return {
        "id": record.id,
        "contact_id": record.contact_id,
        "email": record.email,
        "list_id": record.list_id,
        "list": record.list_name,
        "action": record.action,
        "source": record.source,
        "reason": record.reason,
        "ip": record.ip,
        "user_agent": record.user_agent,
        "actor_id": record.actor_id,
        "occurred_at": isoformat(record.occurred_at),
    }
