"""What the pipelines, deals and tasks API accepts and answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from operator import attrgetter
from typing import Any

from flask import request
from marshmallow import (
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from services.sales.models import DEAL_STATUSES
from shared.events import isoformat
from shared.schemas import (
    MAX_AMOUNT,
    NUL_MESSAGE,
    JsonBoolean,
    StrictSchema,
    currency_field,
    holds_nul,
    money,
    uuid_string,
)
from shared.web import invalid, load_body, load_or_422

NOT_BLANK = validate.Regexp(r"^\s*\S", error="Cannot be blank.")
NAME = [validate.Length(min=1, max=200), NOT_BLANK]
PROBABILITY = validate.Range(min=0, max=100)
CENT = Decimal("0.01")
# How far ahead of our clock a client's "now" may be.
CLOCK_SKEW = timedelta(minutes=5)
# Fields that only the deal actions change, with where to go instead.
DEAL_ACTION_FIELDS = {
    "status": "The status changes through POST /deals/{id}/win, /lose or /reopen.",
    "lost_reason": "The lost reason is given to POST /deals/{id}/lose.",
    "closed_at": "closed_at is set by POST /deals/{id}/win or /lose.",
}


# --- field types ---------------------------------------------------------------------------


class MoneyAmount(fields.Decimal):
    """A money amount: a decimal string or number, 0 or more, at most two decimal places.

    Unlike a plain Decimal field it refuses extra places instead of rounding them away.
    """

    default_error_messages = {"places": "Use at most two decimal places."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            allow_nan=False,
            as_string=True,
            validate=validate.Range(min=Decimal("0"), max=MAX_AMOUNT),
            **kwargs,
        )

    def _format_num(self, value: Any) -> Decimal:
        number = Decimal(str(value))
        if not number.is_finite():
            return number  # refused as a special value by the Decimal field
        if number != number.quantize(CENT, rounding=ROUND_DOWN):
            raise self.make_error("places")
        return number.quantize(CENT) + 0  # + 0 turns -0.00 into 0.00


class UtcDateTime(fields.AwareDateTime):
    """An ISO 8601 date-time with a time zone, stored in UTC (SQLite keeps no offset)."""

    default_error_messages = {"range": "The date-time is out of range."}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+05:00 and the like
            raise self.make_error("range") from None


def refuse_nul(data: dict[str, Any]) -> None:
    """422 naming the fields of loaded input that hold a NUL character."""
    bad = sorted(key for key, value in data.items() if holds_nul(value))
    if bad:
        raise invalid({key: [NUL_MESSAGE] for key in bad})


class SalesSchema(StrictSchema):
    """The sales schemas' base: strict, and no text may hold a NUL character (shared)."""


def optional_body(schema: Schema) -> dict[str, Any]:
    """An action's body: may be empty; if sent, a JSON object the schema accepts."""
    if not request.get_data(cache=True):
        return load_or_422(schema, {})
    return load_body(schema)


class ListArgsSchema(SalesSchema):
    """The query parameters every list takes besides its filters."""

    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


# --- pipelines -----------------------------------------------------------------------------


class StageSpecSchema(SalesSchema):
    id = fields.UUID()
    name = fields.String(required=True, validate=NAME)
    probability = fields.Integer(required=True, strict=True, validate=PROBABILITY)


class StageAddSchema(StageSpecSchema):
    """A stage added to a pipeline; without a position it goes last."""

    position = fields.Integer(strict=True, validate=validate.Range(min=0))


class StagePatchSchema(SalesSchema):
    name = fields.String(validate=NAME)
    probability = fields.Integer(strict=True, validate=PROBABILITY)


class StageOrderSchema(SalesSchema):
    stage_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(min=1, max=100))

    @post_load
    def as_strings(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {"stage_ids": [str(stage_id) for stage_id in data["stage_ids"]]}


class PipelineInSchema(SalesSchema):
    id = fields.UUID()
    name = fields.String(required=True, validate=NAME)
    is_default = JsonBoolean()
    stages = fields.List(
        fields.Nested(StageSpecSchema), required=True, validate=validate.Length(min=1, max=100)
    )

    @validates_schema
    def stage_names_unique(self, data: dict[str, Any], **_: Any) -> None:
        seen: set[str] = set()
        for index, stage in enumerate(data.get("stages") or []):
            key = stage["name"].strip().lower()
            if key in seen:
                message = {"name": ["Two stages cannot share a name."]}
                raise ValidationError({str(index): message}, "stages")
            seen.add(key)

    @post_load
    def stage_ids_as_strings(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        for stage in data.get("stages", []):
            if "id" in stage:
                stage["id"] = str(stage["id"])
        return data


class PipelinePatchSchema(SalesSchema):
    name = fields.String(validate=NAME)
    is_default = JsonBoolean()


# --- deals ---------------------------------------------------------------------------------


class MoneySchema(SalesSchema):
    amount = MoneyAmount(required=True)
    currency = currency_field(required=True)


class DealInSchema(SalesSchema):
    """A deal as clients write it. Money: `amount` + `currency`, or `value` {amount, currency}."""

    id = fields.UUID()
    name = fields.String(required=True, validate=NAME)
    contact_id = uuid_string()
    company_id = uuid_string()
    lead_id = uuid_string()
    pipeline_id = fields.UUID()
    stage_id = fields.UUID()
    amount = MoneyAmount()
    currency = currency_field()
    value = fields.Nested(MoneySchema)
    expected_close_date = fields.Date(allow_none=True)
    owner_id = uuid_string()
    description = fields.String(allow_none=True, validate=validate.Length(max=100_000))
    # Accepted only to answer with a pointer to the action that changes them.
    status = fields.Raw(allow_none=True)
    lost_reason = fields.Raw(allow_none=True)
    closed_at = fields.Raw(allow_none=True)

    @validates_schema
    def no_action_fields(self, data: dict[str, Any], **_: Any) -> None:
        errors = {name: [hint] for name, hint in DEAL_ACTION_FIELDS.items() if name in data}
        if "value" in data and ("amount" in data or "currency" in data):
            errors["value"] = ["Give either value or amount and currency, not both."]
        if errors:
            raise ValidationError(errors)

    @post_load
    def fold_value(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data.update(data.pop("value", None) or {})  # a PATCH may give part of the value
        return data


class WinSchema(SalesSchema):
    """Winning a deal; closed_at defaults to now and cannot lie in the future."""

    closed_at = UtcDateTime()

    @validates_schema
    def closed_in_the_past(self, data: dict[str, Any], **_: Any) -> None:
        closed_at = data.get("closed_at")
        if closed_at is not None and closed_at > datetime.now(UTC) + CLOCK_SKEW:
            raise ValidationError("A deal cannot close in the future.", "closed_at")


class LoseSchema(WinSchema):
    reason = fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=500),
            validate.Regexp(r"^\s*\S", error="Say why the deal was lost."),
        ],
    )


class NoBodySchema(SalesSchema):
    """Actions that take no fields (an empty body or `{}`)."""


class DealListArgsSchema(ListArgsSchema):
    q = fields.String(validate=validate.Length(max=200))
    status = fields.String(validate=validate.OneOf(DEAL_STATUSES))
    pipeline_id = fields.UUID()
    stage_id = fields.UUID()
    owner_id = fields.UUID()
    contact_id = fields.UUID()
    company_id = fields.UUID()
    lead_id = fields.UUID()
    currency = currency_field()
    close_after = fields.Date()
    close_before = fields.Date()


# --- tasks ---------------------------------------------------------------------------------


class TaskInSchema(SalesSchema):
    id = fields.UUID()
    title = fields.String(required=True, validate=[validate.Length(min=1, max=300), NOT_BLANK])
    notes = fields.String(allow_none=True, validate=validate.Length(max=100_000))
    due_at = UtcDateTime(allow_none=True)
    contact_id = uuid_string()
    deal_id = uuid_string()
    lead_id = uuid_string()
    owner_id = uuid_string()
    done = JsonBoolean()


class TaskListArgsSchema(ListArgsSchema):
    owner_id = fields.UUID()
    contact_id = fields.UUID()
    deal_id = fields.UUID()
    lead_id = fields.UUID()
    done = fields.Boolean()
    overdue = fields.Boolean()
    due_before = UtcDateTime()
    due_after = UtcDateTime()


# --- representations -----------------------------------------------------------------------


def stage_view(stage: Any) -> dict[str, Any]:
    """A stage as the API answers it."""
    return {
        "id": stage.id,
        "pipeline_id": stage.pipeline_id,
        "name": stage.name,
        "position": stage.position,
        "probability": stage.probability,
        "created_at": isoformat(stage.created_at),
        "updated_at": isoformat(stage.updated_at),
    }


def pipeline_view(pipeline: Any) -> dict[str, Any]:
    """A pipeline with its stages in order (as the API answers it and its events carry it)."""
    return {
        "id": pipeline.id,
        "name": pipeline.name,
        "is_default": pipeline.is_default,
        "stages": [stage_view(s) for s in sorted(pipeline.stages, key=attrgetter("position"))],
        "version": pipeline.version,
        "created_at": isoformat(pipeline.created_at),
        "updated_at": isoformat(pipeline.updated_at),
    }


def deal_view(deal: Any) -> dict[str, Any]:
    """A deal as the API answers it (and as its events carry it)."""
    return {
        "id": deal.id,
        "name": deal.name,
        "contact_id": deal.contact_id,
        "company_id": deal.company_id,
        "lead_id": deal.lead_id,
        "pipeline_id": deal.pipeline_id,
        "stage_id": deal.stage_id,
        "amount": f"{deal.amount:.2f}",
        "currency": deal.currency,
        "value": money(deal.amount, deal.currency),
        "expected_close_date": (
            deal.expected_close_date.isoformat() if deal.expected_close_date else None
        ),
        "status": deal.status,
        "lost_reason": deal.lost_reason,
        "owner_id": deal.owner_id,
        "description": deal.description,
        "stage_changed_at": isoformat(deal.stage_changed_at),
        "closed_at": isoformat(deal.closed_at) if deal.closed_at else None,
        "version": deal.version,
        "created_at": isoformat(deal.created_at),
        "updated_at": isoformat(deal.updated_at),
    }


def as_utc(moment: datetime | None) -> datetime | None:
    """A stored date-time in UTC (SQLite gives them back without a zone)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def is_overdue(task: Any, now: datetime) -> bool:
    """Not done and due before now."""
    due_at = as_utc(task.due_at)
    return not task.done and due_at is not None and due_at < now


def task_view(task: Any, now: datetime | None = None) -> dict[str, Any]:
    """A task as the API answers it (and as its events carry it)."""
    return {
        "id": task.id,
        "title": task.title,
        "notes": task.notes,
        "due_at": isoformat(task.due_at) if task.due_at else None,
        "contact_id": task.contact_id,
        "deal_id": task.deal_id,
        "lead_id": task.lead_id,
        "owner_id": task.owner_id,
        "done": task.done,
        "completed_at": isoformat(task.completed_at) if task.completed_at else None,
        "overdue": is_overdue(task, now or datetime.now(UTC)),
        "version": task.version,
        "created_at": isoformat(task.created_at),
        "updated_at": isoformat(task.updated_at),
    }
