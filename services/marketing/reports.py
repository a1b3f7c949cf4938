"""Marketing reports over a period: the summary, campaigns, and engagement over time.

A period is [from, to) in UTC. What falls in it depends on the figure:

- campaigns: those *launched* in the period (or, with a status, every campaign in that
  status), with their counters as `GET /campaigns/{id}` shows them. The summary adds the
  counters of the campaigns launched in the period up and takes its rates from the sums:
  opens, clicks and unsubscribes per email sent (delivered), bounces per email requested.
- engagement: the moments campaign_stats keeps per recipient (`sent_at`, `opened_at`,
  `clicked_at`, `bounced_at`, `unsubscribed_at`) that fall in the period, whichever
  campaign they belong to, counted per UTC day, ISO week (from Monday) or calendar month.
  Each moment is counted by the database into its bucket with one grouped query per
  figure (a CASE over the bucket bounds, the same SQL on SQLite and PostgreSQL): a few
  hundred rows at most, whatever the number of recipients.
- customers (churn, at risk, lifetime value): services/marketing/reports_customers.py.

Summary rates are exact ratios shown as 4-place decimal strings (null when nothing to
measure); a campaign's own stats keep the shape of the campaigns API.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from services.marketing import campaigns, reports_customers
from services.marketing.models import Campaign, CampaignRecipient
from shared.reporting import ratio

INTERVALS = ("day", "week", "month")
# The recipient moment each engagement figure counts.
MOMENTS: dict[str, InstrumentedAttribute[Any]] = {
    "sent": CampaignRecipient.sent_at,
    "opened": CampaignRecipient.opened_at,
    "clicked": CampaignRecipient.clicked_at,
    "bounced": CampaignRecipient.bounced_at,
    "unsubscribed": CampaignRecipient.unsubscribed_at,
}
COUNTERS = {
    "recipients": Campaign.recipients_count,
    "requested": Campaign.requested_count,
    "sent": Campaign.sent_count,
    "opened": Campaign.opened_count,
    "clicked": Campaign.clicked_count,
    "bounced": Campaign.bounced_count,
    "failed": Campaign.failed_count,
    "unsubscribed": Campaign.unsubscribed_count,
}


# --- campaigns ------------------------------------------------------------------------------


def launched_within(first: datetime, last: datetime) -> ColumnElement[bool]:
    """SQL on campaigns: launched in [first, last)."""
    return and_(Campaign.launched_at >= first, Campaign.launched_at < last)


def campaigns_statement(first: datetime, last: datetime, status: str | None) -> Select[Any]:
    """The campaigns the per-campaign report lists: launched in the period, or in `status`."""
    if status is not None:
        return select(Campaign).where(Campaign.status == status)
    return select(Campaign).where(launched_within(first, last))


def campaign_line(campaign: Campaign) -> dict[str, Any]:
    """One campaign in the report: what it is and its stats as the campaigns API has them."""
    return {
        "id": campaign.id,
        "name": campaign.name,
        "status": campaign.status,
        "segment_id": campaign.segment_id,
        "launched_at": campaign.launched_at,
        "sent_at": campaign.sent_at,
        "stats": campaigns.stats_view(campaign),
    }


def rates(totals: Counter[str]) -> dict[str, str | None]:
    """Open, click, unsubscribe rates per email sent; bounce rate per email requested."""
    sent = totals["sent"]
    return {
        "open_rate": ratio(totals["opened"], sent),
        "click_rate": ratio(totals["clicked"], sent),
        "bounce_rate": ratio(totals["bounced"], totals["requested"]),
        "unsubscribe_rate": ratio(totals["unsubscribed"], sent),
    }


def campaign_totals(session: Session, first: datetime, last: datetime) -> Counter[str]:
    """The campaigns launched in the period, counted, and their counters summed."""
    sums = [func.coalesce(func.sum(column), 0).label(name) for name, column in COUNTERS.items()]
    row = session.execute(
        select(func.count().label("campaigns"), *sums).where(launched_within(first, last))
    ).one()
    return Counter({name: int(value or 0) for name, value in row._mapping.items()})


def summary_report(
    session: Session, first: datetime, last: datetime, inactive_days: int, now: datetime
) -> dict[str, Any]:
    """Campaigns sent and their rates, churn, customers at risk and their lifetime value."""
    totals = campaign_totals(session, first, last)
    churn = reports_customers.churn_figures(session, first, last)
    return {
        "from": first,
        "to": last,
        "as_of": now,
        "campaigns_sent": totals["campaigns"],
        **{name: totals[name] for name in COUNTERS},
        **rates(totals),
        "churn_rate": churn["churn_rate"],
        "customers_at_start": churn["customers_at_start"],
        "churned": churn["churned"],
        "inactive_days": inactive_days,
        "at_risk": reports_customers.at_risk_count(session, now, inactive_days),
        **reports_customers.lifetime_value_figures(session),
    }


# --- engagement over time -------------------------------------------------------------------


def bucket_start(moment: datetime, interval: str) -> datetime:
    """The start (UTC) of the day, ISO week or month holding `moment`."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day


def next_bucket(start: datetime, interval: str) -> datetime:
    """The start of the bucket after the one starting at `start`."""
    if interval == "day":
        return start + timedelta(days=1)
    if interval == "week":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def bucket_bounds(first: datetime, last: datetime, interval: str) -> list[datetime]:
    """first, every bucket start inside (first, last), then last: n buckets, n + 1 bounds."""
    bounds, start = [first], next_bucket(bucket_start(first, interval), interval)
    while start < last:
        bounds.append(start)
        start = next_bucket(start, interval)
    return [*bounds, last]


def _counted_by_bucket(
    session: Session, column: InstrumentedAttribute[Any], bounds: list[datetime]
) -> dict[int, int]:
    """How many recipients' `column` falls in each bucket (by index), grouped in SQL."""
    index = case(
        *[(column < bound, number) for number, bound in enumerate(bounds[1:])],
        else_=None,
    ).label("bucket")
    inner = (
        select(index).where(column.is_not(None), column >= bounds[0], column < bounds[-1])
    ).subquery()
    rows = session.execute(select(inner.c.bucket, func.count()).group_by(inner.c.bucket))
    return {int(bucket): int(count) for bucket, count in rows if bucket is not None}


def engagement_report(
    session: Session, first: datetime, last: datetime, interval: str
) -> dict[str, Any]:
    """Per bucket of the period: emails sent, opened, clicked, bounced, unsubscribed."""
    bounds = bucket_bounds(first, last, interval)
    counted = {
        name: _counted_by_bucket(session, column, bounds) for name, column in MOMENTS.items()
    }
    buckets = [
        {
            "start": bounds[number],
            "end": bounds[number + 1],
            **{name: counted[name].get(number, 0) for name in MOMENTS},
        }
        for number in range(len(bounds) - 1)
    ]
    totals = {name: sum(found.values()) for name, found in counted.items()}
    return {"from": first, "to": last, "interval": interval, "totals": totals, "buckets": buckets}
