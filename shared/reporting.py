"""Pieces every service's reports share: exact ratios, UTC day ranges, SQL durations."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import BigInteger, and_, cast, func, null
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

SECONDS_PER_DAY = 86_400


def ratio(part: int, whole: int, places: int = 4) -> str | None:
    """`part / whole` as a decimal string rounded half-up (None when `whole` is 0)."""
    if not whole:
        return None
    quantum = Decimal(1).scaleb(-places)
    return str((Decimal(part) / Decimal(whole)).quantize(quantum, ROUND_HALF_UP))


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def utc_start(day: date) -> datetime:
    """Midnight UTC at the start of `day`: range bounds for timestamp columns."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def within_days(column: Any, first: date, last: date) -> ColumnElement[bool]:
    """`column` falls on a day from `first` to `last` inclusive (UTC)."""
    return and_(column >= utc_start(first), column < utc_start(last + timedelta(days=1)))


def elapsed_seconds(session: Session, end: Any, start: Any) -> ColumnElement[int]:
    """Whole seconds from `start` to `end` (wall clock), computed by the database."""
    if is_postgres(session):
        elapsed = func.extract("epoch", end - start)
    else:
        elapsed = (func.julianday(end) - func.julianday(start)) * SECONDS_PER_DAY
    return cast(func.round(elapsed), BigInteger)


def grouped(key: Any, *columns: Any) -> tuple[list[Any], list[Any]]:
    """The columns to select and to group by, `key` first (NULL when grouping everything)."""
    if key is None:
        return [null(), *columns], list(columns)
    return [key, *columns], [key, *columns]
