"""How deals are found: list filters, free text, sorting and the search language."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.sql.elements import ColumnElement

from services.sales.models import Deal
from shared.pagination import SortKey
from shared.search import BadFilter, SearchField, column_condition, words_condition

# Deals without an expected close date sort after every dated deal.
NO_CLOSE_DATE = date(9999, 12, 31)

DEAL_SORTS = {
    "created_at": SortKey("created_at", Deal.created_at),
    "updated_at": SortKey("updated_at", Deal.updated_at),
    "amount": SortKey("amount", Deal.amount),
    "name": SortKey("name", Deal.name),
    "expected_close_date": SortKey(
        "expected_close_date",
        func.coalesce(Deal.expected_close_date, NO_CLOSE_DATE),
        null_as=NO_CLOSE_DATE,
    ),
    "stage_changed_at": SortKey("stage_changed_at", Deal.stage_changed_at),
}
DEFAULT_SORT = "-created_at"


def amount_condition(operator: str, value: Any) -> ColumnElement[bool]:
    """`amount <operator> value`, refusing numbers no amount column could compare with."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str | int | float) and not isinstance(item, bool):
            try:
                number = Decimal(str(item))
            except InvalidOperation:
                continue  # column_condition says what was expected
            if not number.is_finite() or not -20 <= number.adjusted() < 15:
                raise BadFilter("Expected an amount: a finite number below 10^15.")
    return column_condition(Deal.amount, "number", operator, value)


SEARCH_FIELDS: dict[str, SearchField] = {
    "id": SearchField(Deal.id, "id"),
    "name": SearchField(Deal.name),
    "contact_id": SearchField(Deal.contact_id, "id"),
    "company_id": SearchField(Deal.company_id, "id"),
    "lead_id": SearchField(Deal.lead_id, "id"),
    "pipeline_id": SearchField(Deal.pipeline_id, "id"),
    "stage_id": SearchField(Deal.stage_id, "id"),
    "owner_id": SearchField(Deal.owner_id, "id"),
    "status": SearchField(Deal.status),
    "lost_reason": SearchField(Deal.lost_reason),
    "amount": SearchField(condition=amount_condition),
    "currency": SearchField(Deal.currency),
    "expected_close_date": SearchField(Deal.expected_close_date, "date"),
    "stage_changed_at": SearchField(Deal.stage_changed_at, "datetime"),
    "closed_at": SearchField(Deal.closed_at, "datetime"),
    "created_at": SearchField(Deal.created_at, "datetime"),
    "updated_at": SearchField(Deal.updated_at, "datetime"),
}

# List filters that compare a column with the parameter's value.
EQUALITY_FILTERS = (
    "status",
    "pipeline_id",
    "stage_id",
    "owner_id",
    "contact_id",
    "company_id",
    "lead_id",
    "currency",
)


def text_condition(query: str) -> ColumnElement[bool]:
    """Every word of `q` appears in the deal's name."""
    return words_condition(query, Deal.name)


def list_statement(args: Mapping[str, Any]) -> Select[Any]:
    """The deals matching the list endpoint's (validated) query parameters.

    `close_after` and `close_before` are inclusive; deals without an expected close date
    fall outside any such range.
    """
    statement = select(Deal)
    for name in EQUALITY_FILTERS:
        if args.get(name) is not None:
            statement = statement.where(getattr(Deal, name) == args[name])
    if args.get("close_after") is not None:
        statement = statement.where(Deal.expected_close_date >= args["close_after"])
    if args.get("close_before") is not None:
        statement = statement.where(Deal.expected_close_date <= args["close_before"])
    if args.get("q"):
        statement = statement.where(text_condition(args["q"]))
    return statement
