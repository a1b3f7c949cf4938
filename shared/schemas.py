"""Schema pieces every service shares: strictness, search and batch envelopes, money."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, pre_load, validate

from shared.search import OPERATORS

CURRENCY = validate.Regexp(r"^[A-Z]{3}$", error="Use an ISO 4217 code such as EUR.")
MAX_AMOUNT = Decimal("999999999999.99")
NUL_MESSAGE = "Text cannot contain NUL (\\u0000) characters."


def holds_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character anywhere (PostgreSQL cannot store one)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(key) or holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(holds_nul(item) for item in value)
    return False


def uuid_string() -> fields.Field:
    """An optional UUID that loads as a string."""
    return fields.UUID(allow_none=True)


class JsonBoolean(fields.Boolean):
    """A boolean of a JSON body: true or false, nothing else (422 "Not a valid boolean.").

    marshmallow's Boolean also takes 0, 1, "yes", "on" and the like, which a query string
    needs ("?done=true") and a JSON body must not send. Body schemas use this one, at any
    depth (batch inputs too); query-string schemas keep fields.Boolean.
    """

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class StrictSchema(Schema):
    """Unknown fields are an error (API.md), UUIDs come out as strings, and no text may
    hold a NUL character (PostgreSQL cannot store one: it would be a 500, not a 422)."""

    class Meta:
        unknown = RAISE

    @pre_load
    def no_nul_characters(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict):
            bad = sorted(str(key) for key, value in data.items() if holds_nul([key, value]))
            if bad:
                raise ValidationError({key: [NUL_MESSAGE] for key in bad})
        return data

    @post_load
    def uuids_as_strings(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {key: str(value) if _is_uuid(value) else value for key, value in data.items()}


def _is_uuid(value: Any) -> bool:
    return isinstance(value, uuid.UUID)


class FilterSchema(StrictSchema):
    field = fields.String(required=True, validate=validate.Length(min=1, max=100))
    operator = fields.String(required=True, validate=validate.OneOf(OPERATORS))
    value = fields.Raw(allow_none=True)


class FilterGroupSchema(StrictSchema):
    filters = fields.List(
        fields.Nested(FilterSchema), required=True, validate=validate.Length(min=1, max=20)
    )


class SearchSchema(StrictSchema):
    filter_groups = fields.List(
        fields.Nested(FilterGroupSchema), load_default=list, validate=validate.Length(max=10)
    )
    sort = fields.String(load_default=None, allow_none=True)
    query = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    limit = fields.Integer(load_default=50, strict=True, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, allow_none=True)


class BatchReadSchema(StrictSchema):
    ids = fields.List(fields.UUID(), required=True, validate=validate.Length(min=1, max=100))


class BatchInputsSchema(StrictSchema):
    """The envelope of a batch: up to 100 inputs, each validated on its own."""

    inputs = fields.List(fields.Dict(), required=True, validate=validate.Length(min=1, max=100))


def amount_field(**kwargs: Any) -> fields.Decimal:
    """A money amount: a decimal string (or number) with at most two places, never negative."""
    return fields.Decimal(
        places=2,
        as_string=True,
        allow_nan=False,
        validate=validate.Range(min=Decimal("0"), max=MAX_AMOUNT),
        **kwargs,
    )


def currency_field(**kwargs: Any) -> fields.String:
    return fields.String(validate=CURRENCY, **kwargs)


def money(amount: Any, currency: str) -> dict[str, str]:
    return {"amount": f"{amount:.2f}", "currency": currency}
