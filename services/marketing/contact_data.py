"""The contacts service's contact, as its events and its list API carry it, read into the
replica's columns; anything malformed is a PermanentError (the event can never be applied)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.bus import PermanentError
from shared.events import Envelope, canonical_uuid
from shared.schemas import holds_nul

MAX_TAGS = 500
MAX_LIFETIME_VALUE = Decimal("1e12")
TEXT_FIELDS = {"first_name": 100, "last_name": 100, "lifecycle_stage": 20}
ID_FIELDS = ("company_id", "owner_id")


def uuid_value(value: Any, name: str) -> str:
    """A UUID string, canonical; else the event can never be applied."""
    canonical = canonical_uuid(value)
    if canonical is None:
        raise PermanentError(f"{name} must be a UUID string")
    return canonical


def optional_uuid(value: Any, name: str) -> str | None:
    return None if value is None else uuid_value(value, name)


def merged_pair(event: Envelope) -> tuple[str, str] | None:
    """(survivor, duplicate) ids of a `contact.merged` event; None when there is nothing to
    merge (a redacted event, or a contact merged into itself)."""
    data = event.data
    if data.get("redacted"):
        return None
    survivor_id = uuid_value(data.get("id", event.aggregate_id), "id")
    duplicate_id = uuid_value(data.get("duplicate_id"), "duplicate_id")
    return None if survivor_id == duplicate_id else (survivor_id, duplicate_id)


def event_version(event: Envelope) -> int:
    """The aggregate version that orders an aggregate's events."""
    version = event.aggregate_version
    if version is None:
        version = event.data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PermanentError(f"{event.type} needs its aggregate_version (a positive integer)")
    return version


def _text(value: Any, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise PermanentError(f"{name} must be text of at most {limit} characters, without NUL")
    return value


def _moment(value: Any, name: str) -> datetime | None:
    """An ISO 8601 time as an aware UTC datetime (how every service stores times)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise PermanentError(f"{name} must be an ISO 8601 date-time") from None


def _money(value: Any) -> tuple[Decimal, str | None]:
    """`{amount, currency}` (or a bare amount) as a Decimal and a currency code."""
    if isinstance(value, Mapping):
        amount, currency = value.get("amount"), value.get("currency")
    else:
        amount, currency = value, None
    try:
        number = Decimal(str(amount if amount is not None else "0"))
    except InvalidOperation:
        number = Decimal("NaN")
    if isinstance(amount, bool) or not number.is_finite() or abs(number) >= MAX_LIFETIME_VALUE:
        raise PermanentError("lifetime_value must hold an amount below 10^12")
    if currency is not None and (not isinstance(currency, str) or len(currency) != 3):
        raise PermanentError("lifetime_value.currency must be a 3-letter code")
    return number.quantize(Decimal("0.01")), currency


def _tags(value: Any) -> list[str]:
    """Tag names as keys: trimmed, lower-cased (tags are case-insensitive), once each."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise PermanentError(f"tags must be a list of at most {MAX_TAGS} names")
    keys = {tag.strip().lower() if isinstance(tag, str) else "" for tag in value}
    if not all(0 < len(key) <= 100 and "\x00" not in key for key in keys):
        raise PermanentError("each tag must be a name of 1 to 100 characters")
    return sorted(keys)


def contact_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """The replica's columns from a contact as the contacts API shows it (fields present only)."""
    values: dict[str, Any] = {}
    if "email" in data:
        email = _text(data["email"], "email", 254)
        values["email"] = email.strip() if email and email.strip() else None
        values["email_key"] = values["email"].lower() if values["email"] else None
    for name, limit in TEXT_FIELDS.items():
        if name in data:
            values[name] = _text(data[name], name, limit)
    for name in ID_FIELDS:
        if name in data:
            values[name] = optional_uuid(data[name], name)
    if "custom_fields" in data:
        fields = data["custom_fields"]
        if fields is not None and (not isinstance(fields, Mapping) or holds_nul(fields)):
            raise PermanentError("custom_fields must be an object (without NUL characters)")
        values["custom_fields"] = dict(fields or {})
    if "lifetime_value" in data:
        values["lifetime_value"], values["currency"] = _money(data["lifetime_value"])
    if "last_activity_at" in data:
        values["last_activity_at"] = _moment(data["last_activity_at"], "last_activity_at")
    if "created_at" in data:
        values["contact_created_at"] = _moment(data["created_at"], "created_at")
    if "tags" in data:
        values["tags"] = _tags(data["tags"])
    return values
