"""What the leads, scoring and forms API accepts (validation) and answers (representation)."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields, validate, validates, validates_schema

from services.sales.models import BEHAVIOUR_KINDS, LEAD_STATUSES
from shared.events import isoformat
from shared.schemas import JsonBoolean, StrictSchema, amount_field, currency_field, uuid_string

NAME = validate.Length(max=100)
PHONE = validate.Regexp(r"^[0-9+()\-. /x]{3,50}$", error="Not a valid phone number.")
SOURCE = validate.Regexp(
    r"^[A-Za-z0-9_.\-]{1,50}$", error="Use 1 to 50 letters, digits, '_', '-' or '.'."
)
FIELD_NAME = validate.Regexp(
    r"^[a-z][a-z0-9_]{0,63}$", error="Use lower-case letters, digits and _ (start with a letter)."
)
POINTS = validate.Range(min=-1000, max=1000)
MAX_CUSTOM_FIELDS = 50


RULE_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "email_domain",
    "company_name",
    "title",
    "source",
    "phone",
    "website",
    "message",
)
CUSTOM_PREFIX = "custom_fields."
CUSTOM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TEXT_OPERATORS = ("contains", "not_contains", "starts_with", "ends_with")
NUMBER_OPERATORS = ("gt", "gte", "lt", "lte")
OPERATORS = ("eq", "neq", *TEXT_OPERATORS, "in", "exists", *NUMBER_OPERATORS, "is_free_mail")


def is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return Decimal(str(value)).is_finite()


def _is_scalar(value: Any) -> bool:
    return (isinstance(value, str) and 1 <= len(value) <= 500) or is_number(value)


def _value_error(operator: str, value: Any) -> str | None:
    """Why `value` does not fit `operator`, or None when it does."""
    if operator in ("eq", "neq"):
        if _is_scalar(value) or isinstance(value, bool):
            return None
        return f"{operator} takes text (1 to 500 characters), a number or true/false."
    if operator in TEXT_OPERATORS:
        ok = isinstance(value, str) and 1 <= len(value) <= 500
        return None if ok else f"{operator} takes text (1 to 500 characters)."
    if operator == "in":
        ok = isinstance(value, list) and 1 <= len(value) <= 100 and all(map(_is_scalar, value))
        return None if ok else "in takes a list of 1 to 100 texts or numbers."
    if operator == "exists":
        return None if isinstance(value, bool) else "exists takes true or false."
    if operator in NUMBER_OPERATORS:
        return None if is_number(value) else f"{operator} takes a number."
    return None if value is None or isinstance(value, bool) else "is_free_mail takes true/false."


def rule_errors(field: str, operator: str, value: Any) -> dict[str, list[str]]:
    """What is wrong with a scoring rule as written (empty when it can be evaluated)."""
    errors: dict[str, list[str]] = {}
    custom = field.startswith(CUSTOM_PREFIX) and CUSTOM_NAME.match(field[len(CUSTOM_PREFIX) :])
    if field not in RULE_FIELDS and not custom:
        errors["field"] = [f"Choose one of {', '.join(RULE_FIELDS)} or custom_fields.<name>."]
    if operator not in OPERATORS:
        errors["operator"] = [f"Choose one of {', '.join(OPERATORS)}."]
    elif operator == "is_free_mail" and field not in ("email", "email_domain"):
        errors["operator"] = ["is_free_mail tests the email or email_domain field."]
    else:
        problem = _value_error(operator, value)
        if problem:
            errors["value"] = [problem]
    return errors


def _check_custom_value(value: Any) -> None:
    """A lead's custom field holds text, a number, true/false, null or a list of text."""
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError("Numbers must be finite.")
        return
    if isinstance(value, str):
        if len(value) > 1000:
            raise ValidationError("Text is limited to 1,000 characters.")
        return
    if isinstance(value, list) and len(value) <= 100:
        if all(isinstance(item, str) and len(item) <= 200 for item in value):
            return
    raise ValidationError("Use text, a number, true/false, null or a list of up to 100 texts.")


class LeadInSchema(StrictSchema):
    """A lead as clients write it; server-kept fields (score, version...) are refused."""

    id = fields.UUID()
    first_name = fields.String(allow_none=True, validate=NAME)
    last_name = fields.String(allow_none=True, validate=NAME)
    email = fields.Email(allow_none=True, validate=validate.Length(max=254))
    phone = fields.String(allow_none=True, validate=PHONE)
    company_name = fields.String(allow_none=True, validate=validate.Length(max=200))
    title = fields.String(allow_none=True, validate=validate.Length(max=200))
    website = fields.String(allow_none=True, validate=validate.Length(max=500))
    source = fields.String(validate=SOURCE)
    message = fields.String(allow_none=True, validate=validate.Length(max=10_000))
    status = fields.String(validate=validate.OneOf(LEAD_STATUSES))
    unqualified_reason = fields.String(allow_none=True, validate=validate.Length(max=500))
    owner_id = uuid_string()
    custom_fields = fields.Dict(
        keys=fields.String(validate=FIELD_NAME),
        values=fields.Raw(allow_none=True, validate=_check_custom_value),
        validate=validate.Length(max=MAX_CUSTOM_FIELDS),
    )

    @validates_schema
    def names_someone(self, data: dict[str, Any], partial: Any = None, **_: Any) -> None:
        if partial:
            return
        if not any(data.get(name) for name in ("first_name", "last_name", "email", "company_name")):
            raise ValidationError(
                "Give at least a first name, a last name, an email or a company name.", "_schema"
            )


class DealDraftSchema(StrictSchema):
    """The deal a conversion makes; every field optional (sensible defaults apply)."""

    name = fields.String(validate=validate.Length(min=1, max=200))
    amount = amount_field()
    currency = currency_field()
    pipeline_id = fields.UUID()
    stage_id = fields.UUID()
    expected_close_date = fields.Date(allow_none=True)
    owner_id = fields.UUID()
    description = fields.String(allow_none=True, validate=validate.Length(max=10_000))


class ConvertSchema(StrictSchema):
    """`POST /leads/{id}/convert`: an existing contact to link, and the deal to make."""

    contact_id = fields.UUID()
    create_deal = JsonBoolean(load_default=True)
    deal = fields.Nested(DealDraftSchema)

    @validates_schema
    def deal_only_when_made(self, data: dict[str, Any], **_: Any) -> None:
        if "deal" in data and not data.get("create_deal", True):
            raise ValidationError("A deal is described only when create_deal is true.", "deal")


class ScoringRuleInSchema(StrictSchema):
    """A scoring rule: a field, an operator, a value fitting the operator, and its points."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    field = fields.String(required=True, validate=validate.Length(min=1, max=100))
    operator = fields.String(required=True, validate=validate.Length(min=1, max=20))
    value = fields.Raw(allow_none=True)
    points = fields.Integer(required=True, strict=True, validate=POINTS)
    active = JsonBoolean()

    @validates_schema
    def value_fits_operator(self, data: dict[str, Any], partial: Any = None, **_: Any) -> None:
        if partial:
            return  # a change is checked once merged with the rule (scoring.update_rule)
        errors = rule_errors(data["field"], data["operator"], data.get("value"))
        if errors:
            raise ValidationError(errors)


class ScoringSettingsSchema(StrictSchema):
    """The qualification threshold and the points each behaviour earns (fields optional)."""

    qualify_threshold = fields.Integer(strict=True, validate=validate.Range(min=1, max=100_000))
    behaviour_points = fields.Dict(
        keys=fields.String(validate=validate.OneOf(BEHAVIOUR_KINDS)),
        values=fields.Integer(strict=True, validate=POINTS),
    )


class FormLeadSchema(StrictSchema):
    """A public web-form post; `nickname` is the honeypot that people never fill."""

    first_name = fields.String(validate=NAME)
    last_name = fields.String(validate=NAME)
    email = fields.Email(required=True, validate=validate.Length(max=254))
    company_name = fields.String(validate=validate.Length(max=200))
    title = fields.String(validate=validate.Length(max=200))
    phone = fields.String(validate=PHONE)
    website = fields.String(validate=validate.Length(max=500))
    message = fields.String(validate=validate.Length(max=5_000))
    source = fields.String(load_default="web_form", validate=SOURCE)
    nickname = fields.String(validate=validate.Length(max=1000))

    @validates("website")
    def no_spaces(self, value: str, **_: Any) -> None:
        if any(char.isspace() for char in value):
            raise ValidationError("Not a valid web address.")


def _moment(value: Any) -> str | None:
    return isoformat(value) if value is not None else None


def lead_view(lead: Any) -> dict[str, Any]:
    """A lead as the API answers it (and as its events carry it)."""
    return {
        "id": lead.id,
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "email": lead.email,
        "phone": lead.phone,
        "company_name": lead.company_name,
        "title": lead.title,
        "website": lead.website,
        "source": lead.source,
        "message": lead.message,
        "status": lead.status,
        "score": lead.score,
        "rule_points": lead.rule_points,
        "behaviour_points": lead.behaviour_points,
        "owner_id": lead.owner_id,
        "custom_fields": lead.custom_fields or {},
        "unqualified_reason": lead.unqualified_reason,
        "contact_id": lead.contact_id,
        "deal_id": lead.deal_id,
        "qualified_at": _moment(lead.qualified_at),
        "converted_at": _moment(lead.converted_at),
        "version": lead.version,
        "created_at": _moment(lead.created_at),
        "updated_at": _moment(lead.updated_at),
    }


def rule_view(rule: Any) -> dict[str, Any]:
    """A scoring rule as the API answers it."""
    return {
        "id": rule.id,
        "name": rule.name,
        "field": rule.field,
        "operator": rule.operator,
        "value": rule.value,
        "points": rule.points,
        "active": rule.active,
        "version": rule.version,
        "created_at": _moment(rule.created_at),
        "updated_at": _moment(rule.updated_at),
    }
