"""Cursor (keyset) pagination, sorting and the list answer shape of API.md."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from flask import request
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shared.web import ApiError, invalid

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class SortKey:
    name: str
    column: ColumnElement[Any]
    descending: bool = False
    attribute: str | None = None  # the entity attribute holding the value, if not `name`
    null_as: Any = None  # what the column expression gives for NULL (coalesced columns)

    def value_of(self, row: Any) -> Any:
        value = getattr(row, self.attribute or self.name)
        return self.null_as if value is None else value


def parse_limit(raw: Any) -> int:
    """The page size: 1..200, default 50."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        raise invalid({"limit": ["Must be an integer."]}) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid({"limit": [f"Must be between 1 and {MAX_LIMIT}."]})
    return limit


def parse_sort(raw: str | None, allowed: dict[str, SortKey], default: str) -> list[SortKey]:
    """`field` or `-field` (comma separated for several) into sort keys; unknown fields 422."""
    keys = []
    for part in (raw or default).split(","):
        part = part.strip()
        descending = part.startswith("-")
        name = part.lstrip("-+")
        if name not in allowed:
            choices = ", ".join(sorted(allowed))
            raise invalid({"sort": [f"Cannot sort by {name!r}; choose from {choices}."]})
        key = allowed[name]
        keys.append(SortKey(name, key.column, descending, key.attribute, key.null_as))
    return keys


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, date):
        return {"d": value.isoformat()}
    if isinstance(value, Decimal):
        return {"dec": str(value)}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if "dt" in value:
            return datetime.fromisoformat(value["dt"])
        if "d" in value:
            return date.fromisoformat(value["d"])
        if "dec" in value:
            return Decimal(value["dec"])
    return value


def encode_cursor(sort: list[SortKey], values: list[Any]) -> str:
    payload = {"s": [k.name + ("-" if k.descending else "") for k in sort]}
    payload["v"] = [_encode_value(v) for v in values]
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _expected_type(column: ColumnElement[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def _check_type(value: Any, column: ColumnElement[Any]) -> Any:
    """A cursor value must be what its column holds: a crafted one must not reach the SQL."""
    expected = _expected_type(column)
    if value is None or expected is None or isinstance(value, expected):
        return value
    if expected is Decimal and isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"a cursor value is not a {expected.__name__}")


def decode_cursor(
    cursor: str, sort: list[SortKey], columns: list[ColumnElement[Any]] | None = None
) -> list[Any]:
    """The last row's sort values from a cursor made for the same sort, else 422.

    With `columns` (the sort columns, then the id column) each value's type is checked too.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        names = [k.name + ("-" if k.descending else "") for k in sort]
        if payload["s"] != names or len(payload["v"]) != len(sort) + 1:
            raise ValueError("cursor made for another sort")
        values = [_decode_value(v) for v in payload["v"]]
        if columns is not None:
            values = [_check_type(v, c) for v, c in zip(values, columns, strict=True)]
        return values
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        raise invalid({"cursor": ["Not a valid cursor for this list and sort."]}) from None


def _after(keys: list[tuple[ColumnElement[Any], bool]], values: list[Any]) -> ColumnElement[bool]:
    clauses = []
    for index, (column, descending) in enumerate(keys):
        equal_before = [keys[j][0] == values[j] for j in range(index)]
        beyond = column < values[index] if descending else column > values[index]
        clauses.append(and_(*equal_before, beyond))
    return or_(*clauses)


def paginate(
    session: Session,
    statement: Select[Any],
    sort: list[SortKey],
    id_column: ColumnElement[Any],
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """One page of `statement`'s rows (ORM entities) and the cursor of the next page."""
    keys = [(k.column, k.descending) for k in sort]
    keys.append((id_column, sort[-1].descending if sort else False))
    if cursor:
        values = decode_cursor(cursor, sort, [column for column, _ in keys])
        statement = statement.where(_after(keys, values))
    order = [column.desc() if descending else column.asc() for column, descending in keys]
    rows = list(session.scalars(statement.order_by(*order).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    values = [k.value_of(last) for k in sort] + [getattr(last, id_column.key)]
    return rows, encode_cursor(sort, values)


PAGING_PARAMETERS = ("limit", "cursor", "sort")


def list_params() -> tuple[int, str | None]:
    """`limit` and `cursor` from the query string; 422 when a paging parameter is repeated
    (`?limit=&limit=500` must not be read as whichever one a route happens to take)."""
    repeated = [name for name in PAGING_PARAMETERS if len(request.args.getlist(name)) > 1]
    if repeated:
        raise invalid({name: ["Give this parameter once."] for name in repeated})
    return parse_limit(request.args.get("limit")), request.args.get("cursor") or None


def page_answer(items: list[Any], next_cursor: str | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": next_cursor}


__all__ = [
    "ApiError",
    "SortKey",
    "decode_cursor",
    "encode_cursor",
    "list_params",
    "page_answer",
    "paginate",
    "parse_limit",
    "parse_sort",
]
