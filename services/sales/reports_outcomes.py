"""Sales reports over what already happened: win rate, lead funnel, sales cycle.

Every figure is grouped in SQL over a date range (UTC days, both ends included); rates
and averages are exact integer ratios rounded once, half-up (services/sales/reports.py
explains the money rules). Durations are summed as whole seconds, computed by the
database: julianday() on SQLite, extract(epoch) on PostgreSQL.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import and_, case, exists, func, null, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from services.sales.models import Deal, Lead
from services.sales.reports import cents, money_list, period_keys, period_of
from shared.reporting import SECONDS_PER_DAY, elapsed_seconds, ratio, within_days
from shared.reporting import grouped as _grouped

Pair = tuple[int, int]
# What a figure is grouped by: a column expression, or None for one group of everything
# (answered under the key None).
Key = ColumnElement[Any] | None


# --- win rate -------------------------------------------------------------------------------


@dataclass
class Outcomes:
    """Deals won and lost in a group, and what the won ones were worth per currency."""

    won: int = 0
    lost: int = 0
    won_cents: Counter[str] = field(default_factory=Counter)

    def view(self) -> dict[str, Any]:
        return {
            "won": self.won,
            "lost": self.lost,
            "win_rate": ratio(self.won, self.won + self.lost),
            "won_value": money_list(self.won_cents),
        }


def _outcomes(
    session: Session, condition: ColumnElement[bool], key: Key
) -> defaultdict[Any, Outcomes]:
    """Won and lost counts and won value of closed deals, grouped in SQL by `key`."""
    selected, grouped = _grouped(key, Deal.status, Deal.currency)
    query = (
        select(*selected, func.count(), func.sum(cents(Deal.amount)))
        .where(condition)
        .group_by(*grouped)
    )
    groups: defaultdict[Any, Outcomes] = defaultdict(Outcomes)
    for group, status, currency, count, amount in session.execute(query):
        outcome = groups[group]
        if status == "won":
            outcome.won += count
            outcome.won_cents[currency] += int(amount)
        else:
            outcome.lost += count
    return groups


def win_rate_report(
    session: Session, first: date, last: date, period: str, owner_id: str | None
) -> dict[str, Any]:
    """Won / (won + lost) of deals closed from `first` to `last`: overall, by owner, by period."""
    condition = and_(Deal.status.in_(("won", "lost")), within_days(Deal.closed_at, first, last))
    if owner_id is not None:
        condition = and_(condition, Deal.owner_id == owner_id)
    overall = _outcomes(session, condition, None)
    by_owner = _outcomes(session, condition, Deal.owner_id)
    by_period = _outcomes(session, condition, period_of(session, Deal.closed_at, period))
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "period": period,
        "owner_id": owner_id,
        "overall": overall[None].view(),
        "by_owner": [
            {"owner_id": owner, **by_owner[owner].view()} for owner in _owner_order(by_owner)
        ],
        "by_period": [
            {"period": key, **by_period[key].view()} for key in period_keys(first, last, period)
        ],
    }


def _owner_order(groups: dict[str | None, Any]) -> list[str | None]:
    """Owners by id, deals without an owner last."""
    return sorted(groups, key=lambda owner: (owner is None, owner or ""))


# --- funnel ---------------------------------------------------------------------------------


def funnel_report(
    session: Session, first: date, last: date, owner_id: str | None
) -> dict[str, Any]:
    """Leads created in the range, how many qualified, converted, and won a deal."""
    converted = or_(Lead.status == "converted", Lead.converted_at.is_not(None))
    qualified = or_(
        Lead.qualified_at.is_not(None), Lead.status.in_(("qualified", "converted")), converted
    )
    won = exists().where(Deal.lead_id == Lead.id, Deal.status == "won")
    query = select(
        func.count(),
        *(
            func.coalesce(func.sum(case((step, 1), else_=0)), 0)
            for step in (qualified, converted, won)
        ),
    ).where(within_days(Lead.created_at, first, last))
    if owner_id is not None:
        query = query.where(Lead.owner_id == owner_id)
    leads, qualified_count, converted_count, won_count = (
        int(value) for value in session.execute(query).one()
    )
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "owner_id": owner_id,
        "steps": [
            {"name": "leads", "count": leads},
            {"name": "qualified", "count": qualified_count},
            {"name": "converted", "count": converted_count},
            {"name": "won", "count": won_count},
        ],
        "conversion": {
            "qualified_from_leads": ratio(qualified_count, leads),
            "converted_from_qualified": ratio(converted_count, qualified_count),
            "won_from_converted": ratio(won_count, converted_count),
            "won_from_leads": ratio(won_count, leads),
        },
    }


# --- sales cycle ----------------------------------------------------------------------------


def _cycle_seconds(session: Session) -> ColumnElement[int]:
    """Whole seconds from a deal's creation to its close, computed by the database."""
    return elapsed_seconds(session, Deal.closed_at, Deal.created_at)


def _days(seconds: int, count: int) -> str | None:
    """`seconds / count` in days, one decimal place, half-up (None when count is 0)."""
    if not count:
        return None
    days = Decimal(seconds) / Decimal(count) / SECONDS_PER_DAY
    return str(days.quantize(Decimal("0.1"), ROUND_HALF_UP))


def _averages(session: Session, condition: ColumnElement[bool], key: Key) -> dict[Any, Pair]:
    """(count, total seconds) of won deals per `key`."""
    selected, grouped = _grouped(key)
    query = (
        select(*selected, func.count(), func.sum(_cycle_seconds(session)))
        .where(condition)
        .group_by(*grouped)
    )
    return {group: (int(count), int(total or 0)) for group, count, total in session.execute(query)}


def _medians(session: Session, condition: ColumnElement[bool], key: Key) -> dict[Any, Pair]:
    """(how many middle values, their total seconds) per `key`: one or two middle deals.

    Ranks each group's durations with window functions (SQLite >= 3.25 and PostgreSQL)
    and keeps the middle row, or the two middle rows of an even count.
    """
    seconds = _cycle_seconds(session)
    group = key if key is not None else null()
    ranked = (
        select(
            group.label("grp"),
            seconds.label("seconds"),
            func.row_number().over(partition_by=key, order_by=seconds).label("rank"),
            func.count().over(partition_by=key).label("size"),
        )
        .where(condition)
        .subquery()
    )
    middle = ranked.c.rank.between((ranked.c.size + 1) // 2, (ranked.c.size + 2) // 2)
    query = (
        select(ranked.c.grp, func.count(), func.sum(ranked.c.seconds))
        .where(middle)
        .group_by(ranked.c.grp)
    )
    return {group: (int(count), int(total)) for group, count, total in session.execute(query)}


def _cycle_view(averages: Pair, medians: Pair) -> dict[str, Any]:
    count, total = averages
    return {
        "count": count,
        "average_days": _days(total, count),
        "median_days": _days(medians[1], medians[0]),
    }


def sales_cycle_report(
    session: Session, first: date, last: date, owner_id: str | None
) -> dict[str, Any]:
    """Days from creation to win of deals won in the range: average and median, by owner."""
    condition = and_(Deal.status == "won", within_days(Deal.closed_at, first, last))
    if owner_id is not None:
        condition = and_(condition, Deal.owner_id == owner_id)
    overall = _averages(session, condition, None).get(None, (0, 0))
    overall_median = _medians(session, condition, None).get(None, (0, 0))
    by_owner = _averages(session, condition, Deal.owner_id)
    owner_medians = _medians(session, condition, Deal.owner_id)
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "owner_id": owner_id,
        "overall": _cycle_view(overall, overall_median),
        "by_owner": [
            {"owner_id": owner, **_cycle_view(by_owner[owner], owner_medians[owner])}
            for owner in _owner_order(by_owner)
        ],
    }
