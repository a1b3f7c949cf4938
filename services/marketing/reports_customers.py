"""Customer reports: churn over a period, customers at risk now, their lifetime value.

- churn: the customers at the start are the contacts whose stage at `from` is customer
  (stage_history.stage_at: the newest version that occurred by then). Of them, churned
  are those with a version of stage churned that occurred in the period (after `from`, up
  to `to`), counted once however many such versions. The rate is churned / customers at
  the start, a 4-place decimal string, null when there were no customers at the start.
  Contacts who became customers during the period are not in it, whatever happened
  next; a customer merged into another or erased during the period stays in the start
  count and is not churned.
- at risk: contacts whose stage is customer now (the replica's) and whose last activity
  (`last_activity_at`, else when the contact was created) is more than `inactive_days`
  days ago or unknown, or who have an open ticket with a breached SLA (the replica's
  `tickets_breached`). Most inactive first (no known activity first), then by id.
- lifetime value: the average over customers (stage customer now) holding a value, per
  currency (currencies are never added together); exact, shown to cents half-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import BigInteger, Select, cast, distinct, func, or_, select
from sqlalchemy.orm import Session

from services.marketing.models import Contact, ContactStage
from services.marketing.stage_history import stage_at
from shared.pagination import SortKey
from shared.reporting import ratio
from shared.schemas import money

CUSTOMER, CHURNED = "customer", "churned"
CENT = Decimal("0.01")
# A contact with no known activity sorts before every real moment (the most at risk).
NO_ACTIVITY = datetime(1970, 1, 1, tzinfo=UTC)


# --- churn ----------------------------------------------------------------------------------


def churn_figures(session: Session, first: datetime, last: datetime) -> dict[str, Any]:
    """Customers at `first`, how many of them churned in (first, last], and the rate."""
    at_start = stage_at(first).where(ContactStage.stage == CUSTOMER).subquery()
    customers = session.scalar(select(func.count()).select_from(at_start)) or 0
    churned = session.scalar(
        select(func.count(distinct(ContactStage.contact_id))).where(
            ContactStage.contact_id.in_(select(at_start.c.contact_id)),
            ContactStage.stage == CHURNED,
            ContactStage.occurred_at > first,
            ContactStage.occurred_at <= last,
        )
    )
    return {
        "customers_at_start": customers,
        "churned": churned or 0,
        "churn_rate": ratio(churned or 0, customers),
    }


def churn_report(session: Session, first: datetime, last: datetime) -> dict[str, Any]:
    """The churn of the period, with its bounds."""
    return {"from": first, "to": last, **churn_figures(session, first, last)}


# --- customers at risk ----------------------------------------------------------------------


def _last_seen() -> Any:
    """SQL: the contact's last activity, else its creation (None when neither is known)."""
    return func.coalesce(Contact.last_activity_at, Contact.contact_created_at)


def last_seen(contact: Contact) -> datetime | None:
    """`_last_seen` of a loaded contact, as an aware UTC time (SQLite gives naive ones)."""
    seen = contact.last_activity_at or contact.contact_created_at
    return seen.replace(tzinfo=UTC) if seen is not None and seen.tzinfo is None else seen


@dataclass(frozen=True)
class LastSeenKey(SortKey):
    """The at-risk order: last seen, no known activity first (a page's cursor holds it)."""

    def value_of(self, row: Any) -> Any:
        return last_seen(row) or NO_ACTIVITY


def _live_customers() -> list[Any]:
    return [
        Contact.lifecycle_stage == CUSTOMER,
        Contact.erased.is_(False),
        Contact.merged_into.is_(None),
    ]


def at_risk_statement(now: datetime, inactive_days: int) -> Select[Any]:
    """Live customers inactive for more than `inactive_days`, or with a breached ticket."""
    cutoff = now - timedelta(days=inactive_days)
    inactive = or_(_last_seen().is_(None), _last_seen() < cutoff)
    return select(Contact).where(*_live_customers(), or_(inactive, Contact.tickets_breached > 0))


def at_risk_sort() -> list[SortKey]:
    """Least recently active first (no known activity first)."""
    seen = func.coalesce(Contact.last_activity_at, Contact.contact_created_at, NO_ACTIVITY)
    return [LastSeenKey("last_seen", seen)]


def at_risk_count(session: Session, now: datetime, inactive_days: int) -> int:
    inner = at_risk_statement(now, inactive_days).subquery()
    return session.scalar(select(func.count()).select_from(inner)) or 0


def at_risk_line(contact: Contact, now: datetime, inactive_days: int) -> dict[str, Any]:
    """One customer at risk, with how long inactive and why it is listed."""
    seen = last_seen(contact)
    days = (now - seen).days if seen is not None else None
    reasons = []
    if seen is None or now - seen > timedelta(days=inactive_days):
        reasons.append("inactive")
    if contact.tickets_breached:
        reasons.append("breached_tickets")
    names = [part for part in (contact.first_name, contact.last_name) if part]
    return {
        "contact_id": contact.id,
        "name": " ".join(names) or None,
        "email": contact.email,
        "owner_id": contact.owner_id,
        "last_activity_at": contact.last_activity_at,
        "days_inactive": days,
        "breached_tickets": contact.tickets_breached,
        "reasons": reasons,
    }


# --- lifetime value -------------------------------------------------------------------------


def lifetime_value_figures(session: Session) -> dict[str, Any]:
    """How many customers there are now, and their average lifetime value per currency."""
    cents = cast(func.round(Contact.lifetime_value * 100), BigInteger)
    rows = session.execute(
        select(Contact.currency, func.count(), func.coalesce(func.sum(cents), 0))
        .where(*_live_customers(), Contact.currency.is_not(None))
        .group_by(Contact.currency)
        .order_by(Contact.currency)
    )
    averages = [
        money((Decimal(int(total)) / 100 / count).quantize(CENT, ROUND_HALF_UP), currency)
        for currency, count, total in rows
    ]
    customers = session.scalar(select(func.count()).select_from(Contact).where(*_live_customers()))
    return {"customers": customers or 0, "average_lifetime_value": averages}
