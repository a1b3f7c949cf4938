"""What the SLA policies API accepts and answers."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, post_load, validate, validates_schema

from services.support.business_hours import TIME_OF_DAY, is_timezone, minutes_of
from services.support.models import PRIORITIES, SlaPolicy
from shared.events import isoformat
from shared.schemas import StrictSchema

NOT_BLANK = validate.Regexp(r"^\s*\S", error="Cannot be blank.")
# A target is at least a minute and at most a year (365 days of business minutes).
MINUTES = validate.Range(min=1, max=525_600)
CLOCK = validate.Regexp(TIME_OF_DAY, error='Use a time of day "HH:MM" (end may be "24:00").')
START_CLOCK = validate.Regexp(r"^(?:[01]\d|2[0-3]):[0-5]\d$", error='Use a time "HH:MM".')


class CalendarSchema(StrictSchema):
    """Business hours: a time zone, working days (Monday = 0) and one window per day."""

    timezone = fields.String(required=True)
    days = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=0, max=6)),
        required=True,
        validate=validate.Length(min=1, max=7),
    )
    start = fields.String(required=True, validate=START_CLOCK)
    end = fields.String(required=True, validate=CLOCK)

    @validates_schema
    def consistent(self, data: dict[str, Any], **_: Any) -> None:
        errors: dict[str, list[str]] = {}
        if "timezone" in data and not is_timezone(data["timezone"]):
            errors["timezone"] = ["Use an IANA time zone name such as Europe/Berlin."]
        days = data.get("days") or []
        if len(set(days)) != len(days):
            errors["days"] = ["Give each day once."]
        if "start" in data and "end" in data:
            if minutes_of(data["end"]) <= minutes_of(data["start"]):
                errors["end"] = ["Must be after start (one window per day, within the day)."]
        if errors:
            raise ValidationError(errors)

    @post_load
    def days_in_order(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {**data, "days": sorted(data["days"])}


def calendar_field(**kwargs: Any) -> fields.Nested:
    """A calendar, or null for round the clock."""
    return fields.Nested(CalendarSchema, allow_none=True, **kwargs)


class PolicyInSchema(StrictSchema):
    """A new policy. The resolution target may not be shorter than the first response one."""

    id = fields.UUID()
    name = fields.String(required=True, validate=[validate.Length(min=1, max=200), NOT_BLANK])
    priority = fields.String(required=True, validate=validate.OneOf(PRIORITIES))
    first_response_minutes = fields.Integer(required=True, strict=True, validate=MINUTES)
    resolution_minutes = fields.Integer(required=True, strict=True, validate=MINUTES)
    calendar = calendar_field(load_default=None)

    @validates_schema
    def targets_in_order(self, data: dict[str, Any], **_: Any) -> None:
        check_targets(data.get("first_response_minutes"), data.get("resolution_minutes"))


class PolicyPatchSchema(StrictSchema):
    """A partial change; the targets' order is checked against the merged policy."""

    name = fields.String(validate=[validate.Length(min=1, max=200), NOT_BLANK])
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    first_response_minutes = fields.Integer(strict=True, validate=MINUTES)
    resolution_minutes = fields.Integer(strict=True, validate=MINUTES)
    calendar = calendar_field()


class PolicyListArgsSchema(StrictSchema):
    """The query parameters of the list."""

    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


def check_targets(first_response: int | None, resolution: int | None) -> None:
    """A ticket is answered before it is resolved: resolution >= first response."""
    if first_response is not None and resolution is not None and resolution < first_response:
        raise ValidationError({"resolution_minutes": ["Must be at least first_response_minutes."]})


def policy_view(policy: SlaPolicy) -> dict[str, Any]:
    """A policy as the API answers it (and as its events carry it)."""
    return {
        "id": policy.id,
        "name": policy.name,
        "priority": policy.priority,
        "first_response_minutes": policy.first_response_minutes,
        "resolution_minutes": policy.resolution_minutes,
        "calendar": policy.calendar,
        "version": policy.version,
        "created_at": isoformat(policy.created_at),
        "updated_at": isoformat(policy.updated_at),
    }
