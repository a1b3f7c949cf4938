"""What dynamic segments filter on: API.md's search language over the contact replica.

A segment's `filter` is `{"filter_groups": [{"filters": [{"field", "operator", "value"}]}]}`:
the groups are OR-ed, the filters inside a group AND-ed (shared/search.py makes the SQL).
Operators: eq, neq, lt, lte, gt, gte, in, contains, starts_with, exists. Fields:

- `email` (case-insensitive), `first_name`, `last_name`, `lifecycle_stage` (subscriber, lead,
  opportunity, customer, churned), `currency`: text.
- `company_id`, `owner_id`: ids.
- `tags`: eq "vip" has the tag, neq "vip" has not, in [...] has one of them, exists true/false
  has any tag / none (tags compare case-insensitively).
- `custom_fields.<name>`: compared by the JSON type of the value given: a string compares as
  text (every operator), a number as a number (eq, neq, lt, lte, gt, gte, in; fields holding
  numbers or numeric text, as the contacts service stores decimals), true/false with eq/neq;
  exists true/false says whether the contact has a value at all. A multi-select field holds a
  list: use `contains` with one option's name.
- `lifetime_value` (the amount, whatever its currency), `emails_opened`, `emails_clicked` (how
  many emails were opened / clicked at least once), `deals_won`, `tickets_open`: numbers.
- `last_activity_at`, `created_at` (when the contact was created): date-times, ISO 8601
  (`2026-01-31T00:00:00Z`), or relative to the moment the segment is evaluated, so a dynamic
  segment moves with time:

  - `"now"`, `"now-90d"`, `"now+12h"`: units m (minutes), h (hours), d (days), w (weeks), up
    to 100 years either way; `{"relative": "-90d"}` is the same as `"now-90d"`.
  - Relative values go with lt, lte, gt and gte only: `last_activity_at lt "now-90d"` is "last
    active more than 90 days ago", `created_at gte "now-30d"` is "created within 30 days".
    A contact never active has no `last_activity_at` and matches no comparison: add a group
    with `last_activity_at exists false` to count them as inactive too.

Erased contacts, merged duplicates and contacts without an email are never members.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Numeric, String, and_, exists, literal, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from services.marketing.models import Contact, ContactTag
from shared.events import utcnow
from shared.search import BadFilter, SearchField, column_condition, search_condition

LIFECYCLE_STAGES = ("subscriber", "lead", "opportunity", "customer", "churned")
CUSTOM_PREFIX = "custom_fields."
CUSTOM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
RELATIVE = re.compile(r"^now(?:([+-])(\d{1,7})([mhdw]))?$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_OFFSET = timedelta(days=36525)
RELATIVE_HELP = 'A relative time is "now", "now-90d" or {"relative": "-90d"} (units m, h, d, w).'
COMPARISONS = ("lt", "lte", "gt", "gte")


# --- JSON values the same way on SQLite and PostgreSQL ------------------------------------


class JsonText(FunctionElement[str]):
    """A custom field's value as text (true/false as 'true'/'false'); NULL when absent."""

    type = String()
    inherit_cache = True


class JsonNumber(FunctionElement[Decimal]):
    """A custom field's value as a number, when it is a number or numeric text; else NULL."""

    type = Numeric()
    inherit_cache = True


def _parts(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> tuple[str, str]:
    column, key = element.clauses
    return compiler.process(column, **kw), compiler.process(key, **kw)


@compiles(JsonText)
def _text_postgresql(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _parts(element, compiler, **kw)
    return f"({column} ->> {key})"


@compiles(JsonNumber)
def _number_postgresql(element: JsonNumber, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _parts(element, compiler, **kw)
    # CASE, not AND: PostgreSQL would cast text that is no number and fail the query.
    pattern = "'^ *-?[0-9]+([.][0-9]+)?([eE][-+]?[0-9]{1,3})? *$'"
    return (
        f"(CASE WHEN ({column} ->> {key}) ~ {pattern} THEN CAST({column} ->> {key} AS NUMERIC) END)"
    )


@compiles(JsonText, "sqlite")
def _text_sqlite(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _parts(element, compiler, **kw)
    path = f"('$.\"' || {key} || '\"')"
    return (
        f"(CASE json_type({column}, {path}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        f"ELSE CAST(json_extract({column}, {path}) AS TEXT) END)"
    )


@compiles(JsonNumber, "sqlite")
def _number_sqlite(element: JsonNumber, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _parts(element, compiler, **kw)
    path = f"('$.\"' || {key} || '\"')"
    value = f"trim(json_extract({column}, {path}))"
    return (
        f"(CASE WHEN json_type({column}, {path}) IN ('integer', 'real') "
        f"THEN json_extract({column}, {path}) "
        f"WHEN json_type({column}, {path}) = 'text' AND {value} GLOB '*[0-9]*' "
        f"AND NOT {value} GLOB '*[^0-9eE.+-]*' THEN CAST({value} AS REAL) END)"
    )


# --- field conditions -----------------------------------------------------------------------


def _email_condition(operator: str, value: Any) -> ColumnElement[bool]:
    """Emails compare case-insensitively."""
    lowered = [str(v).lower() for v in value] if isinstance(value, list) else value
    if isinstance(lowered, str):
        lowered = lowered.strip().lower()
    return column_condition(Contact.email_key, "string", operator, lowered)


def _stage_condition(operator: str, value: Any) -> ColumnElement[bool]:
    """A lifecycle stage, which must be one there is."""
    if operator in ("eq", "neq", "in"):
        for stage in value if isinstance(value, list) else [value]:
            if isinstance(stage, str) and stage not in LIFECYCLE_STAGES:
                raise BadFilter(f"Unknown lifecycle stage {stage!r}; one of {LIFECYCLE_STAGES}.")
    return column_condition(Contact.lifecycle_stage, "string", operator, value)


def _has_tag(clause: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists(
        select(ContactTag.tag).where(ContactTag.contact_id == Contact.id, clause)
    ).correlate(Contact)


def tag_condition(operator: str, value: Any) -> ColumnElement[bool]:
    """Has the tag (eq), has it not (neq), has one of them (in), has any / none (exists)."""
    if operator == "exists":
        if not isinstance(value, bool):
            raise BadFilter("exists takes true or false.")
        any_tag = _has_tag(ContactTag.tag.is_not(None))
        return any_tag if value else ~any_tag
    if operator not in ("eq", "neq", "in"):
        raise BadFilter("tags take eq (has the tag), neq (has not), in or exists.")
    if operator == "in" and not isinstance(value, list):
        raise BadFilter("in takes a list of tags.")
    names = value if operator == "in" else [value]
    if not all(isinstance(name, str) and name.strip() for name in names):
        raise BadFilter("A tag is a non-empty name.")
    keys = [name.strip().lower() for name in names]
    if operator == "in":
        return _has_tag(column_condition(ContactTag.tag, "string", "in", keys))
    has_it = _has_tag(ContactTag.tag == keys[0])
    return ~has_it if operator == "neq" else has_it


def relative_moment(value: Any) -> datetime | None:
    """The moment a relative time names, from now; None when the value is not relative."""
    if isinstance(value, Mapping):
        if set(value) != {"relative"} or not isinstance(value["relative"], str):
            raise BadFilter(RELATIVE_HELP)
        text = value["relative"].strip().lower()
        text = text if text.startswith("now") else f"now{text}"
    elif isinstance(value, str) and value.strip().lower().startswith("now"):
        text = value.strip().lower()
    else:
        return None
    match = RELATIVE.match(text)
    if match is None:
        raise BadFilter(RELATIVE_HELP)
    sign, amount, unit = match.groups()
    if amount is None:
        return utcnow()
    offset = timedelta(**{UNITS[unit]: int(amount)})
    if offset > MAX_OFFSET:
        raise BadFilter("A relative time reaches at most 100 years.")
    return utcnow() - offset if sign == "-" else utcnow() + offset


def time_condition(column: ColumnElement[Any]) -> Callable[[str, Any], ColumnElement[bool]]:
    """A date-time field taking ISO 8601 values or relative ones (with lt, lte, gt, gte)."""

    def condition(operator: str, value: Any) -> ColumnElement[bool]:
        moment = relative_moment(value)
        if moment is None:
            try:
                return column_condition(column, "datetime", operator, value)
            except BadFilter as error:
                raise BadFilter(f"{error} {RELATIVE_HELP}") from None
        if operator not in COMPARISONS:
            raise BadFilter("A relative time compares with lt, lte, gt or gte.")
        return column_condition(column, "datetime", operator, moment.isoformat())

    return condition


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def custom_field_condition(name: str, operator: str, value: Any) -> ColumnElement[bool]:
    """`custom_fields.<name>`, compared by the JSON type of the value given."""
    if not CUSTOM_NAME.match(name):
        raise BadFilter("Custom field names use lower-case letters, digits and _.")
    key = literal(name, String())
    text = JsonText(Contact.custom_fields, key)
    if operator == "exists":
        return column_condition(text, "string", operator, value)
    sample = value[0] if operator == "in" and isinstance(value, list) and value else value
    if isinstance(sample, bool):
        if operator not in ("eq", "neq"):
            raise BadFilter("true and false compare with eq or neq.")
        return column_condition(text, "string", operator, "true" if value else "false")
    if _is_number(sample):
        if operator in ("contains", "starts_with"):
            raise BadFilter(f"{operator} compares text: give the value as a string.")
        number = JsonNumber(Contact.custom_fields, key)
        return column_condition(number, "number", operator, value)
    return column_condition(text, "string", operator, value)


def custom_field(name: str) -> SearchField | None:
    """The search field `custom_fields.<name>`, for any name; None for other fields."""
    if not name.startswith(CUSTOM_PREFIX):
        return None
    key = name[len(CUSTOM_PREFIX) :]
    return SearchField(
        condition=lambda operator, value: custom_field_condition(key, operator, value)
    )


SEGMENT_FIELDS: dict[str, SearchField] = {
    "email": SearchField(condition=_email_condition),
    "first_name": SearchField(Contact.first_name),
    "last_name": SearchField(Contact.last_name),
    "lifecycle_stage": SearchField(condition=_stage_condition),
    "currency": SearchField(Contact.currency),
    "company_id": SearchField(Contact.company_id, "id"),
    "owner_id": SearchField(Contact.owner_id, "id"),
    "tags": SearchField(condition=tag_condition),
    "lifetime_value": SearchField(Contact.lifetime_value, "number"),
    "emails_opened": SearchField(Contact.emails_opened, "number"),
    "emails_clicked": SearchField(Contact.emails_clicked, "number"),
    "deals_won": SearchField(Contact.deals_won, "number"),
    "tickets_open": SearchField(Contact.tickets_open, "number"),
    "last_activity_at": SearchField(condition=time_condition(Contact.last_activity_at)),
    "created_at": SearchField(condition=time_condition(Contact.contact_created_at)),
}


def reachable() -> ColumnElement[bool]:
    """Contacts a segment may hold: not erased, not merged away, with an email."""
    return and_(
        Contact.erased.is_(False), Contact.merged_into.is_(None), Contact.email_key.is_not(None)
    )


def filter_condition(segment_filter: Mapping[str, Any]) -> ColumnElement[bool]:
    """The SQL condition of a filter, relative times taken from now (422 naming a bad one)."""
    return search_condition(segment_filter["filter_groups"], SEGMENT_FIELDS, custom_field)
