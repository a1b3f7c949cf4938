"""Sales reports over the open pipeline: value by stage, and the forecast by close month.

Money is exact. Amounts are summed in SQL as whole cents (integers: exact on SQLite too,
where a NUMERIC column holds a float) and weighted values as cents x percent, so
`sum(amount) * probability / 100` is exact per stage. Each figure shown is then rounded
once, to cents, half-up; a total is rounded from the exact sum of its parts, so it may
differ by a cent from the sum of its rounded parts. Currencies are never added together:
every money figure is a list with one amount per currency, sorted by currency.

Open deals are read from `deal_totals` (services/sales/totals.py), never from the deals
table: a few hundred rows whatever the number of deals. The reports over what already
happened (win rate, funnel, sales cycle) are in services/sales/reports_outcomes.py.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    String,
    cast,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from services.sales.models import Deal, DealTotal, Pipeline, Stage
from shared.reporting import is_postgres, utc_start
from shared.schemas import money
from shared.web import not_found

CENT = Decimal("0.01")
PERIODS = ("month", "quarter", "year")
Money = list[dict[str, str]]


# --- exact figures ------------------------------------------------------------------------


def cents(amount: Any) -> ColumnElement[int]:
    """An amount column as whole cents, an integer on every database."""
    return cast(func.round(amount * 100), BigInteger)


def money_list(units: Counter[str], exponent: int = 2) -> Money:
    """Per-currency sums held in units of 10^-exponent, as money rounded half-up to cents."""
    return [
        money(Decimal(int(value)).scaleb(-exponent).quantize(CENT, ROUND_HALF_UP), currency)
        for currency, value in sorted(units.items())
    ]


@dataclass
class Figures:
    """A count of deals and their sums per currency, kept as exact integers until shown."""

    count: int = 0
    cents: Counter[str] = field(default_factory=Counter)
    # cents x probability percent: weighted value in units of 10^-4
    weighted: Counter[str] = field(default_factory=Counter)

    def add(self, currency: str, count: Any, amount_cents: Any, weighted: Any = 0) -> None:
        """Add a row of SQL sums (integers, or integral Decimals from PostgreSQL)."""
        self.count += int(count or 0)
        self.cents[currency] += int(amount_cents or 0)
        self.weighted[currency] += int(weighted or 0)

    def view(self, weighted: bool = True) -> dict[str, Any]:
        """`{count, value[, weighted_value]}` as the reports answer it."""
        shown: dict[str, Any] = {"count": self.count, "value": money_list(self.cents)}
        if weighted:
            shown["weighted_value"] = money_list(self.weighted, exponent=4)
        return shown


# --- periods --------------------------------------------------------------------------------


def period_of(session: Session, moment: Any, period: str = "month") -> ColumnElement[str]:
    """The UTC month ("2026-11"), quarter ("2026-Q4") or year ("2026") of a timestamp column."""
    if is_postgres(session):
        # Inline constants, so the SELECT and GROUP BY expressions are the same to PostgreSQL
        pattern = {"month": "'YYYY-MM'", "quarter": """'YYYY-"Q"Q'""", "year": "'YYYY'"}[period]
        utc = func.timezone(literal_column("'UTC'"), moment)
        return func.to_char(utc, literal_column(pattern))
    # SQLite stores UTC timestamps as "YYYY-MM-DD HH:MM:SS.ffffff" text
    if period == "quarter":
        month = cast(func.strftime("%m", moment), Integer)
        year = func.strftime("%Y", moment, type_=String)
        return year + "-Q" + cast((month + 2) // 3, String)
    return func.strftime("%Y-%m" if period == "month" else "%Y", moment)


def month_start(day: date) -> date:
    return day.replace(day=1)


def add_months(day: date, months: int) -> date:
    """The first day of the month `months` after `day`'s month."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def period_key(day: date, period: str) -> str:
    """What `period_of` gives for a moment on that day."""
    if period == "month":
        return f"{day.year:04d}-{day.month:02d}"
    if period == "quarter":
        return f"{day.year:04d}-Q{(day.month + 2) // 3}"
    return f"{day.year:04d}"


def period_keys(first: date, last: date, period: str) -> list[str]:
    """Every period from the one holding `first` to the one holding `last`, in order."""
    keys: list[str] = []
    day = month_start(first)
    while day <= last:
        key = period_key(day, period)
        if not keys or keys[-1] != key:
            keys.append(key)
        day = add_months(day, 1)
    return keys


# --- the pipeline report ------------------------------------------------------------------


def report_pipeline(session: Session, pipeline_id: str | None) -> Pipeline:
    """The pipeline named, or the default one; 404 when there is no such pipeline."""
    if pipeline_id is None:
        pipeline = session.scalar(select(Pipeline).where(Pipeline.is_default.is_(True)))
    else:
        pipeline = session.get(Pipeline, pipeline_id)
    if pipeline is None:
        raise not_found("pipeline", pipeline_id or "(default)")
    return pipeline


def _open_sums() -> tuple[ColumnElement[Any], ...]:
    """count, cents and cents x percent of the running totals joined to their stages."""
    amount = DealTotal.amount_cents
    return (
        func.sum(DealTotal.count),
        func.sum(amount),
        func.sum(amount * Stage.probability),
    )


def _open_totals(
    columns: tuple[Any, ...], pipeline_id: str | None, owner_id: str | None
) -> Select[Any]:
    """`columns` and the sums of the running totals, filtered, grouped by `columns`."""
    query = (
        select(*columns, *_open_sums())
        .join_from(DealTotal, Stage, Stage.id == DealTotal.stage_id)
        .group_by(*columns)
    )
    if owner_id is not None:
        query = query.where(DealTotal.owner_key == owner_id)
    if pipeline_id is not None:
        query = query.where(Stage.pipeline_id == pipeline_id)
    return query


def pipeline_report(session: Session, pipeline: Pipeline, owner_id: str | None) -> dict[str, Any]:
    """Open deals of a pipeline per stage, in stage order, with their totals."""
    columns = (DealTotal.stage_id, DealTotal.currency)
    query = _open_totals(columns, pipeline.id, owner_id)
    by_stage: defaultdict[str, Figures] = defaultdict(Figures)
    total = Figures()
    for stage_id, currency, *sums in session.execute(query):
        by_stage[stage_id].add(currency, *sums)
        total.add(currency, *sums)
    stages = [
        {
            "stage_id": stage.id,
            "name": stage.name,
            "position": stage.position,
            "probability": stage.probability,
            **by_stage[stage.id].view(),
        }
        for stage in pipeline.stages
    ]
    return {
        "pipeline_id": pipeline.id,
        "pipeline_name": pipeline.name,
        "owner_id": owner_id,
        "stages": stages,
        "totals": total.view(),
    }


# --- the forecast ---------------------------------------------------------------------------


def forecast_report(
    session: Session, first: date, last: date, pipeline_id: str | None, owner_id: str | None
) -> dict[str, Any]:
    """Open deals by expected close month (every month listed) and deals won per month."""
    months = period_keys(first, last, "month")
    open_by_month = _open_by_month(session, months, pipeline_id, owner_id)
    won_by_month = _won_by_month(session, first, last, pipeline_id, owner_id)
    return {
        "from": months[0],
        "to": months[-1],
        "pipeline_id": pipeline_id,
        "owner_id": owner_id,
        "months": [
            {
                "month": month,
                **open_by_month[month].view(),
                "won": won_by_month[month].view(weighted=False),
            }
            for month in months
        ],
        "no_close_date": open_by_month[""].view(),
    }


def _open_by_month(
    session: Session, months: list[str], pipeline_id: str | None, owner_id: str | None
) -> defaultdict[str, Figures]:
    """Open figures per close month ("" for deals without an expected close date)."""
    month = DealTotal.close_month
    query = _open_totals((month, DealTotal.currency), pipeline_id, owner_id).where(
        or_(month == "", month.between(months[0], months[-1]))
    )
    figures: defaultdict[str, Figures] = defaultdict(Figures)
    for key, currency, *sums in session.execute(query):
        figures[key].add(currency, *sums)
    return figures


def _won_by_month(
    session: Session, first: date, last: date, pipeline_id: str | None, owner_id: str | None
) -> defaultdict[str, Figures]:
    """Deals won per month of `closed_at`, from the deals (index ix_deals_status_closed)."""
    month = period_of(session, Deal.closed_at, "month")
    query = (
        select(month, Deal.currency, func.count(), func.sum(cents(Deal.amount)))
        .where(Deal.status == "won")
        .where(Deal.closed_at >= utc_start(month_start(first)))
        .where(Deal.closed_at < utc_start(add_months(last, 1)))
        .group_by(month, Deal.currency)
    )
    if pipeline_id is not None:
        query = query.where(Deal.pipeline_id == pipeline_id)
    if owner_id is not None:
        query = query.where(Deal.owner_id == owner_id)
    figures: defaultdict[str, Figures] = defaultdict(Figures)
    for key, currency, count, amount in session.execute(query):
        figures[key].add(currency, count, amount)
    return figures
