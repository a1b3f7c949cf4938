"""How tickets are found: list filters, free text, tags, sorting and the search language."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, Text, case, cast, func, not_, or_, select
from sqlalchemy.sql.elements import ColumnElement

from services.support.models import PRIORITIES, Ticket
from services.support.ticket_schemas import TAG_PATTERN
from shared.pagination import SortKey, parse_sort
from shared.search import BadFilter, SearchField, column_condition, words_condition

DEFAULT_SORT = "-created_at"
# Tickets without a deadline sort after every ticket that has one.
NO_DEADLINE = datetime(9999, 12, 31, tzinfo=UTC)
PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}
# low < normal < high < urgent, as a number the database can order and compare.
priority_rank = case(PRIORITY_RANK, value=Ticket.priority, else_=-1)


@dataclass(frozen=True)
class PriorityKey(SortKey):
    """Sorts by urgency, not alphabetically: the cursor holds the rank, not the name."""

    def value_of(self, row: Any) -> Any:
        return PRIORITY_RANK.get(row.priority, -1)


TICKET_SORTS = {
    "created_at": SortKey("created_at", Ticket.created_at),
    "updated_at": SortKey("updated_at", Ticket.updated_at),
    "priority": PriorityKey("priority", priority_rank),
    "resolution_due_at": SortKey(
        "resolution_due_at",
        func.coalesce(Ticket.resolution_due_at, NO_DEADLINE),
        null_as=NO_DEADLINE,
    ),
    "first_response_due_at": SortKey(
        "first_response_due_at",
        func.coalesce(Ticket.first_response_due_at, NO_DEADLINE),
        null_as=NO_DEADLINE,
    ),
}


def ticket_sort(raw: str | None) -> list[SortKey]:
    """The sort keys of `sort` (422 for unknown fields), priority ranked by urgency."""
    keys = parse_sort(raw, TICKET_SORTS, DEFAULT_SORT)
    return [
        PriorityKey(k.name, k.column, k.descending) if k.name == "priority" else k for k in keys
    ]


def has_tag(tag: str) -> ColumnElement[bool]:
    """The ticket carries this tag (tags are plain words, so their JSON text is `"tag"`)."""
    return cast(Ticket.tags, Text).contains(json.dumps(tag.lower()), autoescape=True)


def _tag_value(value: Any) -> str:
    if not isinstance(value, str) or not re.match(TAG_PATTERN, value):
        raise BadFilter("Expected a tag: 1 to 50 letters, digits, '_', '-', '.', ':' or '/'.")
    return value


def tags_condition(operator: str, value: Any) -> ColumnElement[bool]:
    """`tags eq x` (has x), `neq x` (lacks x), `in [x, y]` (has any of them)."""
    if operator in ("eq", "contains"):
        return has_tag(_tag_value(value))
    if operator == "neq":
        return not_(has_tag(_tag_value(value)))
    if operator == "in":
        if not isinstance(value, list) or not 1 <= len(value) <= 100:
            raise BadFilter("in takes a list of 1 to 100 tags.")
        return or_(*(has_tag(_tag_value(item)) for item in value))
    raise BadFilter("tags take eq, neq, contains or in.")


def priority_condition(operator: str, value: Any) -> ColumnElement[bool]:
    """Priorities compare by urgency (`gte high` is high and urgent)."""
    if operator not in ("lt", "lte", "gt", "gte"):
        return column_condition(Ticket.priority, "string", operator, value)
    if value not in PRIORITY_RANK:
        raise BadFilter(f"Expected one of {', '.join(PRIORITIES)}.")
    return column_condition(priority_rank, "number", operator, PRIORITY_RANK[value])


SEARCH_FIELDS: dict[str, SearchField] = {
    "id": SearchField(Ticket.id, "id"),
    "contact_id": SearchField(Ticket.contact_id, "id"),
    "requester_email": SearchField(Ticket.requester_email),
    "requester_name": SearchField(Ticket.requester_name),
    "subject": SearchField(Ticket.subject),
    "description": SearchField(Ticket.description),
    "channel": SearchField(Ticket.channel),
    "priority": SearchField(condition=priority_condition),
    "status": SearchField(Ticket.status),
    "assignee_id": SearchField(Ticket.assignee_id, "id"),
    "tags": SearchField(condition=tags_condition),
    "sla_breached": SearchField(Ticket.sla_breached, "boolean"),
    "first_response_due_at": SearchField(Ticket.first_response_due_at, "datetime"),
    "resolution_due_at": SearchField(Ticket.resolution_due_at, "datetime"),
    "first_responded_at": SearchField(Ticket.first_responded_at, "datetime"),
    "resolved_at": SearchField(Ticket.resolved_at, "datetime"),
    "closed_at": SearchField(Ticket.closed_at, "datetime"),
    "reopened_count": SearchField(Ticket.reopened_count, "number"),
    "created_at": SearchField(Ticket.created_at, "datetime"),
    "updated_at": SearchField(Ticket.updated_at, "datetime"),
}


def text_condition(query: str) -> ColumnElement[bool]:
    """Every word of `q` appears in the subject, the description or the requester's email."""
    columns = (Ticket.subject, Ticket.description, Ticket.requester_email)
    return words_condition(query, *columns)


def list_statement(args: Mapping[str, Any]) -> Select[Any]:
    """The tickets matching the list endpoint's (validated) query parameters."""
    statement = select(Ticket)
    for name in ("status", "priority", "channel"):
        if args.get(name):
            statement = statement.where(getattr(Ticket, name).in_(args[name]))
    if args.get("assignee_id") == "none":
        statement = statement.where(Ticket.assignee_id.is_(None))
    elif args.get("assignee_id"):
        statement = statement.where(Ticket.assignee_id == args["assignee_id"])
    if args.get("contact_id"):
        statement = statement.where(Ticket.contact_id == str(args["contact_id"]))
    if args.get("tag"):
        statement = statement.where(has_tag(args["tag"]))
    if args.get("breached") is not None:
        statement = statement.where(Ticket.sla_breached == args["breached"])
    if args.get("q"):
        statement = statement.where(text_condition(args["q"]))
    return statement
