"""The running totals of open deals that the pipeline and forecast reports read.

Every change to an open deal's stage, owner, currency, amount, close date or status goes
through `account()` twice, in the same transaction: once with -1 for what the deal
counted before the change, once with +1 for what it counts after. The reports then sum
`deal_totals` (stages x owners x currencies x months: hundreds of rows) instead of the
deals table (hundreds of thousands), and `rebuild()` recomputes them from the deals for
a repair or a check.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import BigInteger, cast, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.sales.models import Deal, DealTotal

Key = tuple[str, str, str, str]  # stage_id, owner_key, currency, close_month


def key_of(deal: Deal) -> Key | None:
    """Where an open deal counts in the totals, or None if it counts nowhere."""
    if deal.status != "open" or deal.stage_id is None:
        return None
    month = deal.expected_close_date.strftime("%Y-%m") if deal.expected_close_date else ""
    return (deal.stage_id, deal.owner_id or "", deal.currency, month)


def snapshot(deal: Deal) -> tuple[Key | None, int]:
    """What a deal contributes now (key, cents): take it before a change, give it to `moved()`."""
    return key_of(deal), int((Decimal(deal.amount or 0) * 100).to_integral_value(ROUND_HALF_UP))


def moved(session: Session, before: tuple[Key | None, int], deal: Deal) -> None:
    """Move a deal's contribution from what `snapshot()` saw to what it is now."""
    after = snapshot(deal)
    if before == after:
        return
    _add(session, before, -1)
    _add(session, after, +1)


def account(session: Session, deal: Deal, sign: int) -> None:
    """Add (+1) or take away (-1) a deal's whole contribution: on create and delete."""
    _add(session, snapshot(deal), sign)


def _add(session: Session, contribution: tuple[Key | None, int], sign: int) -> None:
    key, cents = contribution
    if key is None:
        return
    stage_id, owner_key, currency, month = key
    values = {
        "stage_id": stage_id,
        "owner_key": owner_key,
        "currency": currency,
        "close_month": month,
        "count": sign,
        "amount_cents": cents * sign,
    }
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        module = postgresql if dialect == "postgresql" else sqlite
        statement = module.insert(DealTotal).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["stage_id", "owner_key", "currency", "close_month"],
            set_={
                "count": DealTotal.count + statement.excluded.count,
                "amount_cents": DealTotal.amount_cents + statement.excluded.amount_cents,
            },
        )
        session.execute(statement)
    else:  # pragma: no cover - other databases: read, then write
        row = session.get(DealTotal, key, with_for_update=True)
        if row is None:
            session.execute(insert(DealTotal).values(**values))
        else:
            row.count += sign
            row.amount_cents += cents * sign
    session.execute(
        delete(DealTotal).where(
            DealTotal.stage_id == stage_id,
            DealTotal.owner_key == owner_key,
            DealTotal.currency == currency,
            DealTotal.close_month == month,
            DealTotal.count == 0,
        )
    )


def recount(session: Session, stage_ids: Iterable[str]) -> None:
    """Recompute the totals of some stages from their deals (after a bulk move)."""
    stage_ids = list(stage_ids)
    if not stage_ids:
        return
    session.flush()
    session.execute(delete(DealTotal).where(DealTotal.stage_id.in_(stage_ids)))
    _insert_from_deals(session, Deal.stage_id.in_(stage_ids))


def rebuild(session: Session) -> None:
    """Recompute every total from the deals table."""
    session.flush()
    session.execute(delete(DealTotal))
    _insert_from_deals(session, None)


def _insert_from_deals(session: Session, condition: object) -> None:
    month = func.coalesce(_month(session), "")
    owner = func.coalesce(Deal.owner_id, "")
    query = (
        select(
            Deal.stage_id,
            owner,
            Deal.currency,
            month,
            func.count(),
            func.coalesce(func.sum(cast(func.round(Deal.amount * 100), BigInteger)), 0),
        )
        .where(Deal.status == "open")
        .group_by(Deal.stage_id, owner, Deal.currency, month)
    )
    if condition is not None:
        query = query.where(condition)
    session.execute(
        insert(DealTotal).from_select(
            ["stage_id", "owner_key", "currency", "close_month", "count", "amount_cents"], query
        )
    )


def _month(session: Session) -> Any:
    """`YYYY-MM` of the expected close date, in the database's own dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(Deal.expected_close_date, "YYYY-MM")
    return func.strftime("%Y-%m", Deal.expected_close_date)
