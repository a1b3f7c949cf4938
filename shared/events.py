"""The event envelope every service publishes and consumes, and its schema."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$"


def utcnow() -> datetime:
    return datetime.now(UTC)


def canonical_uuid(value: Any) -> str | None:
    """A UUID string in canonical (lower-case, hyphenated) form; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # money travels as a decimal string, never a float
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> str:
    """Compact JSON; datetimes as ISO 8601 UTC with Z (naive ones are taken as UTC)."""
    options = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS
    return orjson.dumps(value, default=_json_default, option=options).decode()


def isoformat(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, as the API promises."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Envelope:
    """One integration event: a fact that happened in one service."""

    type: str
    source: str
    aggregate_id: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    version: int = 1
    occurred_at: datetime = field(default_factory=utcnow)
    correlation_id: str | None = None
    aggregate_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "occurred_at": isoformat(self.occurred_at)}

    def to_json(self) -> str:
        return dumps(self.to_dict())


class EnvelopeSchema(Schema):
    """Validates an incoming envelope; unknown fields are ignored (forward compatible)."""

    class Meta:
        unknown = EXCLUDE

    id = fields.UUID(required=True)
    type = fields.String(required=True, validate=validate.Regexp(EVENT_TYPE_PATTERN))
    version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    source = fields.String(required=True, validate=validate.Length(min=1, max=64))
    occurred_at = fields.AwareDateTime(required=True, default_timezone=UTC)
    correlation_id = fields.String(load_default=None, allow_none=True)
    aggregate_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    aggregate_version = fields.Integer(load_default=None, allow_none=True, strict=True)
    data = fields.Dict(keys=fields.String(), required=True)

    @post_load
    def make_envelope(self, values: dict[str, Any], **_: Any) -> Envelope:
        values["id"] = str(values["id"])
        return Envelope(**values)


class MalformedEvent(ValueError):
    """A message that can never be handled: not JSON, or not an envelope."""


_schema = EnvelopeSchema()


def parse_envelope(body: bytes) -> Envelope:
    """Decode and validate a message body, or raise MalformedEvent saying why."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedEvent(f"body is not JSON: {error}") from error
    if not isinstance(raw, dict):
        raise MalformedEvent("body is not a JSON object")
    try:
        return _schema.load(raw)
    except ValidationError as error:
        raise MalformedEvent(f"invalid envelope: {error.messages}") from error
