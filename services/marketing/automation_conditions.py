"""An automation's conditions: API.md's filter groups over the event and its contact.

`{"filter_groups": [{"filters": [{"field", "operator", "value"}]}]}`: groups OR-ed, the
filters in a group AND-ed; no conditions (or no groups) match every trigger. Fields:

- `data.<path>`: a field of the triggering event's data (`data.status`; dots reach into
  nested objects: `data.value.amount`). Compared in Python by the JSON type of the value
  given: a number as a number (numeric text in the event counts), true/false with eq/neq,
  text exactly with eq/neq/in and ignoring case with contains/starts_with (contains on a
  list in the event: one of its items). lt/lte/gt/gte take numbers, or date-times (ISO
  8601, or relative: "now-7d", as in segments), compared as moments. exists true/false:
  whether the field is there and not null. A field the event lacks matches only neq and
  exists false. `contact.inactive` has no event data: only contact fields.
- `contact.<field>`: the contact replica as it is after the event was applied, with every
  field and operator a dynamic segment takes (segment_filters.py: lifecycle_stage,
  owner_id, tags, custom_fields.<name>, lifetime_value, last_activity_at, emails_opened,
  deals_won, tickets_open, ...) plus `deals_open` and `tickets_breached`; evaluated in SQL.
  A trigger naming no known (live) contact matches no contact condition.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import and_, or_, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from services.marketing.models import Contact
from services.marketing.segment_filters import (
    SEGMENT_FIELDS,
    custom_field,
    relative_moment,
)
from shared.search import BadFilter, SearchField, column_condition

log = logging.getLogger(__name__)

DATA, CONTACT = "data.", "contact."
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_DEPTH = 5
CONTACT_FIELDS: dict[str, SearchField] = {
    **SEGMENT_FIELDS,
    "deals_open": SearchField(Contact.deals_open, "number"),
    "tickets_breached": SearchField(Contact.tickets_breached, "number"),
}
FIELD_HELP = "Name data.<field> (the event's data) or contact.<field> (the contact)."
COMPARISONS = ("lt", "lte", "gt", "gte")


# --- checking conditions when a rule is saved -----------------------------------------------


def condition_errors(conditions: Mapping[str, Any] | None, event_type: str) -> dict[str, Any]:
    """Errors by group and filter index (as segments report them); empty when all is well."""
    errors: dict[str, Any] = {}
    for g_index, group in enumerate((conditions or {}).get("filter_groups") or []):
        for f_index, spec in enumerate(group["filters"]):
            try:
                _check(spec, event_type)
            except BadFilter as error:
                place = errors.setdefault(str(g_index), {}).setdefault("filters", {})
                place[str(f_index)] = [str(error)]
    return {"filter_groups": errors} if errors else {}


def _check(spec: Mapping[str, Any], event_type: str) -> None:
    field, operator, value = spec["field"], spec["operator"], spec.get("value")
    if field.startswith(CONTACT):
        contact_condition(field[len(CONTACT) :], operator, value)
    elif field.startswith(DATA):
        if event_type == "contact.inactive":
            raise BadFilter("contact.inactive has no event data: use contact.<field>.")
        _path(field)
        _check_data_value(operator, value)
    else:
        raise BadFilter(FIELD_HELP)


def _path(field: str) -> list[str]:
    parts = field[len(DATA) :].split(".")
    if len(parts) > MAX_DEPTH or not all(NAME.match(part) for part in parts):
        raise BadFilter(f"data.<field>: up to {MAX_DEPTH} names of letters, digits and _.")
    return parts


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and not (
        isinstance(value, float) and value != value
    )


def _check_data_value(operator: str, value: Any) -> None:
    """What each operator takes on event data (see the module's docstring)."""
    if operator == "exists" and not isinstance(value, bool):
        raise BadFilter("exists takes true or false.")
    if operator == "in" and not (
        isinstance(value, list) and 1 <= len(value) <= 500 and all(map(_scalar, value))
    ):
        raise BadFilter("in takes a list of 1 to 500 values.")
    if operator in ("contains", "starts_with") and not isinstance(value, str):
        raise BadFilter(f"{operator} takes text.")
    if operator in ("eq", "neq") and not _scalar(value):
        raise BadFilter("eq and neq take text, a number, true or false.")
    if operator in COMPARISONS:
        if _number(value) is None and _moment(value) is None:
            raise BadFilter(f"{operator} takes a number or a date-time.")


# --- evaluating ------------------------------------------------------------------------------


def contact_condition(name: str, operator: str, value: Any) -> ColumnElement[bool]:
    """SQL on the replica for `contact.<name> <operator> value` (BadFilter when wrong)."""
    field = CONTACT_FIELDS.get(name) or custom_field(name)
    if field is None:
        known = ", ".join(sorted(CONTACT_FIELDS))
        raise BadFilter(f"Unknown contact field {name!r}; known: {known}, custom_fields.<name>.")
    if field.condition is not None:
        return field.condition(operator, value)
    assert field.column is not None
    return column_condition(field.column, field.kind, operator, value)


def contact_only_condition(conditions: Mapping[str, Any] | None) -> ColumnElement[bool]:
    """SQL for conditions that name only contact fields (the inactivity scan)."""
    groups = (conditions or {}).get("filter_groups") or []
    if not groups:
        return true()
    return or_(*(and_(*map(_contact_filter, group["filters"])) for group in groups))


def _contact_filter(spec: Mapping[str, Any]) -> ColumnElement[bool]:
    return contact_condition(spec["field"][len(CONTACT) :], spec["operator"], spec.get("value"))


def matches(
    session: Session,
    conditions: Mapping[str, Any] | None,
    data: Mapping[str, Any],
    contact_id: str | None,
) -> bool:
    """Whether a trigger with this event data and contact meets the conditions."""
    groups = (conditions or {}).get("filter_groups") or []
    try:
        return not groups or any(
            _group_matches(session, group, data, contact_id) for group in groups
        )
    except BadFilter as error:  # checked when saved; never let one rule stop the queue
        log.warning("an automation condition cannot be evaluated: %s", error)
        return False


def _group_matches(
    session: Session, group: Mapping[str, Any], data: Mapping[str, Any], contact_id: str | None
) -> bool:
    in_sql = []
    for spec in group["filters"]:
        field, operator, value = spec["field"], spec["operator"], spec.get("value")
        if field.startswith(DATA):
            if not data_matches(operator, value, _lookup(data, _path(field))):
                return False
        else:
            in_sql.append(_contact_filter(spec))
    if not in_sql:
        return True
    if contact_id is None:
        return False
    live = and_(Contact.erased.is_(False), Contact.merged_into.is_(None))
    statement = select(Contact.id).where(Contact.id == contact_id, live, *in_sql)
    return session.scalar(statement) is not None


def _lookup(data: Mapping[str, Any], path: list[str]) -> Any:
    value: Any = data
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _moment(value: Any) -> datetime | None:
    try:
        relative = relative_moment(value)
    except BadFilter:
        return None
    if relative is not None or not isinstance(value, str):
        return relative
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    if isinstance(expected, int | float):
        number = _number(actual)
        return number is not None and number == _number(expected)
    return isinstance(actual, str) and actual == expected


def _compare(operator: str, actual: Any, expected: Any) -> bool:
    moment = _moment(expected) if isinstance(expected, str) else None
    if moment is not None:
        left, right = _moment(actual), moment
    else:
        left, right = _number(actual), _number(expected)
    if left is None or right is None:
        return False
    return {
        "lt": left < right,
        "lte": left <= right,
        "gt": left > right,
        "gte": left >= right,
    }[operator]


def data_matches(operator: str, expected: Any, actual: Any) -> bool:
    """Whether an event's value meets one filter (see the module's docstring)."""
    if operator == "exists":
        return (actual is not None) == expected
    if operator == "neq":
        return not _equal(actual, expected)
    if actual is None:
        return False
    if operator == "eq":
        return _equal(actual, expected)
    if operator == "in":
        return any(_equal(actual, item) for item in expected)
    if operator == "contains":
        if isinstance(actual, list):
            wanted = expected.lower()
            return any(isinstance(item, str) and item.lower() == wanted for item in actual)
        return isinstance(actual, str) and expected.lower() in actual.lower()
    if operator == "starts_with":
        return isinstance(actual, str) and actual.lower().startswith(expected.lower())
    return _compare(operator, actual, expected)


__all__ = ["condition_errors", "contact_only_condition", "data_matches", "matches"]
