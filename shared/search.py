"""The filter-group search language of API.md, turned into SQL conditions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import and_, false, or_, true
from sqlalchemy.sql.elements import ColumnElement

from shared.web import invalid

OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "contains", "starts_with", "exists")
KINDS = ("string", "number", "datetime", "date", "boolean", "id")


# Larger than any amount or count a CRM holds, small enough for every database's numbers.
MAX_NUMBER = Decimal("1e15")


class BadFilter(ValueError):
    """A filter that names an unknown field or carries a value of the wrong type."""


@dataclass(frozen=True)
class SearchField:
    """A searchable field: a column of a kind, or a function making the condition itself."""

    column: ColumnElement[Any] | None = None
    kind: str = "string"
    condition: Callable[[str, Any], ColumnElement[bool]] | None = None


def _coerce(kind: str, value: Any) -> Any:
    if value is None:
        raise BadFilter("A value is required.")
    if kind in ("string", "id"):
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise BadFilter("Expected a string.")
        return str(value)
    if kind == "number":
        if isinstance(value, bool):
            raise BadFilter("Expected a number.")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise BadFilter("Expected a number.") from None
        if not number.is_finite() or abs(number) > MAX_NUMBER:
            raise BadFilter(f"Expected a number between -{MAX_NUMBER} and {MAX_NUMBER}.")
        return number
    if kind == "boolean":
        if not isinstance(value, bool):
            raise BadFilter("Expected true or false.")
        return value
    if kind == "date":
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise BadFilter("Expected a date (YYYY-MM-DD).") from None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadFilter("Expected an ISO 8601 date-time.") from None
    try:  # compared in UTC: that is how every service stores its times
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:
        raise BadFilter("The date-time is out of range.") from None


def column_condition(column: ColumnElement[Any], kind: str, operator: str, value: Any) -> Any:
    """The SQL condition for `column <operator> value`, the value checked against the kind."""
    if operator == "exists":
        if not isinstance(value, bool):
            raise BadFilter("exists takes true or false.")
        return column.is_not(None) if value else column.is_(None)
    if operator == "in":
        if not isinstance(value, list) or not 1 <= len(value) <= 500:
            raise BadFilter("in takes a list of 1 to 500 values.")
        return column.in_([_coerce(kind, item) for item in value])
    if operator in ("contains", "starts_with"):
        if kind != "string":
            raise BadFilter(f"{operator} works on text fields only.")
        text = _coerce(kind, value)
        if operator == "contains":
            return column.icontains(text, autoescape=True)
        return column.istartswith(text, autoescape=True)
    coerced = _coerce(kind, value)
    comparisons: dict[str, Callable[[], Any]] = {
        "eq": lambda: column == coerced,
        "neq": lambda: or_(column != coerced, column.is_(None)),
        "lt": lambda: column < coerced,
        "lte": lambda: column <= coerced,
        "gt": lambda: column > coerced,
        "gte": lambda: column >= coerced,
    }
    if operator not in comparisons:
        raise BadFilter(f"Unknown operator {operator!r}.")
    return comparisons[operator]()


def _filter_condition(
    spec: Mapping[str, Any],
    fields: Mapping[str, SearchField],
    resolve: Callable[[str], SearchField | None] | None,
) -> Any:
    name, operator, value = spec["field"], spec["operator"], spec.get("value")
    field = fields.get(name) or (resolve(name) if resolve else None)
    if field is None:
        raise BadFilter(f"Unknown field {name!r}; searchable: {', '.join(sorted(fields))}.")
    if field.condition is not None:
        return field.condition(operator, value)
    assert field.column is not None
    return column_condition(field.column, field.kind, operator, value)


def search_condition(
    groups: list[Mapping[str, Any]],
    fields: Mapping[str, SearchField],
    resolve: Callable[[str], SearchField | None] | None = None,
) -> ColumnElement[bool]:
    """OR of the groups, AND of the filters inside each (422 naming the bad filter)."""
    if not groups:
        return true()
    errors: dict[str, Any] = {}
    conditions = []
    for g_index, group in enumerate(groups):
        parts = []
        for f_index, spec in enumerate(group["filters"]):
            try:
                parts.append(_filter_condition(spec, fields, resolve))
            except BadFilter as error:
                errors.setdefault(str(g_index), {}).setdefault("filters", {})[str(f_index)] = [
                    str(error)
                ]
        conditions.append(and_(*parts) if parts else false())
    if errors:
        raise invalid({"filter_groups": errors}, "Some filters are not valid")
    return or_(*conditions)


MAX_QUERY_WORDS = 10


def words_condition(query: str | None, *columns: Any) -> ColumnElement[bool]:
    """`?q=`: every word (the first ten) appears in at least one of `columns`."""
    words = (query or "").split()[:MAX_QUERY_WORDS]
    return and_(
        true(),
        *(or_(*(column.icontains(word, autoescape=True) for column in columns)) for word in words),
    )
