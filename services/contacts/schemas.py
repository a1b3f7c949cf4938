"""What the contacts API accepts (validation) and answers (representation)."""

from __future__ import annotations

from typing import Any

from marshmallow import (
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from services.contacts.models import (
    FIELD_ENTITIES,
    FIELD_TYPES,
    INTERACTION_KINDS,
    LIFECYCLE_STAGES,
)
from shared.schemas import JsonBoolean, StrictSchema, money, uuid_string

NAME = validate.Length(max=100)
PHONE = validate.Regexp(r"^[0-9+()\-. /x]{3,50}$", error="Not a valid phone number.")
TAG = validate.Length(min=1, max=64)
FIELD_NAME = validate.Regexp(
    r"^[a-z][a-z0-9_]{0,63}$", error="Use lower-case letters, digits and _ (start with a letter)."
)


class ContactInSchema(StrictSchema):
    """A contact as clients write it; server-kept fields (lifetime_value...) are refused."""

    id = fields.UUID()
    first_name = fields.String(validate=NAME)
    last_name = fields.String(validate=NAME)
    email = fields.Email(allow_none=True, validate=validate.Length(max=254))
    phone = fields.String(allow_none=True, validate=PHONE)
    company_id = uuid_string()
    title = fields.String(allow_none=True, validate=validate.Length(max=200))
    lifecycle_stage = fields.String(validate=validate.OneOf(LIFECYCLE_STAGES))
    owner_id = uuid_string()
    tags = fields.List(fields.String(validate=TAG), validate=validate.Length(max=100))
    custom_fields = fields.Dict(keys=fields.String(validate=FIELD_NAME), values=fields.Raw())

    @validates_schema
    def names_someone(self, data: dict[str, Any], partial: Any = None, **_: Any) -> None:
        if partial:
            return
        if not (data.get("first_name") or data.get("last_name") or data.get("email")):
            raise ValidationError("Give at least a first name, a last name or an email.", "_schema")


class CompanyInSchema(StrictSchema):
    id = fields.UUID()
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    domain = fields.String(
        allow_none=True,
        validate=validate.Regexp(
            r"^(?=.{1,253}$)([a-zA-Z0-9-]{1,63}\.)+[a-zA-Z]{2,63}$", error="Not a valid domain."
        ),
    )
    industry = fields.String(allow_none=True, validate=validate.Length(max=100))
    size = fields.String(allow_none=True, validate=validate.Length(max=50))
    phone = fields.String(allow_none=True, validate=PHONE)
    website = fields.URL(allow_none=True, validate=validate.Length(max=500))
    address = fields.String(allow_none=True, validate=validate.Length(max=500))
    custom_fields = fields.Dict(keys=fields.String(validate=FIELD_NAME), values=fields.Raw())


class CustomFieldInSchema(StrictSchema):
    entity = fields.String(load_default="contact", validate=validate.OneOf(FIELD_ENTITIES))
    name = fields.String(required=True, validate=FIELD_NAME)
    label = fields.String(validate=validate.Length(min=1, max=200))
    type = fields.String(required=True, validate=validate.OneOf(FIELD_TYPES))
    options = fields.List(
        fields.String(validate=validate.Length(min=1, max=200)), validate=validate.Length(max=500)
    )
    required = JsonBoolean()

    @validates_schema
    def choices_for_selects(self, data: dict[str, Any], partial: Any = None, **_: Any) -> None:
        if data.get("type") in ("select", "multiselect") and not data.get("options"):
            raise ValidationError("A select field needs options.", "options")


class CustomFieldPatchSchema(StrictSchema):
    label = fields.String(validate=validate.Length(min=1, max=200))
    options = fields.List(
        fields.String(validate=validate.Length(min=1, max=200)), validate=validate.Length(max=500)
    )
    required = JsonBoolean()


class NoteInSchema(StrictSchema):
    body = fields.String(required=True, validate=validate.Length(min=1, max=100_000))


class InteractionInSchema(StrictSchema):
    kind = fields.String(required=True, validate=validate.OneOf(INTERACTION_KINDS[:-1]))
    direction = fields.String(allow_none=True, validate=validate.OneOf(("inbound", "outbound")))
    subject = fields.String(allow_none=True, validate=validate.Length(max=300))
    body = fields.String(allow_none=True, validate=validate.Length(max=100_000))
    occurred_at = fields.AwareDateTime()
    duration_seconds = fields.Integer(
        allow_none=True, strict=True, validate=validate.Range(min=0, max=86_400 * 7)
    )


class MergeSchema(StrictSchema):
    duplicate_id = fields.UUID(required=True)


def contact_view(contact: Any) -> dict[str, Any]:
    """A contact as the API answers it."""
    return {
        "id": contact.id,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "email": contact.email,
        "phone": contact.phone,
        "company_id": contact.company_id,
        "title": contact.title,
        "lifecycle_stage": contact.lifecycle_stage,
        "owner_id": contact.owner_id,
        "tags": contact.tags,
        "custom_fields": contact.custom_fields or {},
        "lifetime_value": money(contact.lifetime_value, contact.currency),
        "last_activity_at": contact.last_activity_at,
        "version": contact.version,
        "created_at": contact.created_at,
        "updated_at": contact.updated_at,
    }


def company_view(company: Any) -> dict[str, Any]:
    return {
        "id": company.id,
        "name": company.name,
        "domain": company.domain,
        "industry": company.industry,
        "size": company.size,
        "phone": company.phone,
        "website": company.website,
        "address": company.address,
        "custom_fields": company.custom_fields or {},
        "version": company.version,
        "created_at": company.created_at,
        "updated_at": company.updated_at,
    }


def custom_field_view(field: Any) -> dict[str, Any]:
    return {
        "id": field.id,
        "entity": field.entity,
        "name": field.name,
        "label": field.label,
        "type": field.type,
        "options": field.options or [],
        "required": field.required,
        "created_at": field.created_at,
        "updated_at": field.updated_at,
    }


def note_view(note: Any) -> dict[str, Any]:
    return {
        "id": note.id,
        "contact_id": note.contact_id,
        "body": note.body,
        "author_id": note.author_id,
        "created_at": note.created_at,
        "updated_at": note.updated_at,
    }


def interaction_view(entry: Any) -> dict[str, Any]:
    return {
        "id": entry.id,
        "contact_id": entry.contact_id,
        "kind": entry.kind,
        "direction": entry.direction,
        "subject": entry.subject,
        "body": entry.body,
        "occurred_at": entry.occurred_at,
        "duration_seconds": entry.duration_seconds,
        "source": entry.source,
        "event_type": entry.event_type,
        "data": entry.data or {},
        "created_by": entry.created_by,
        "created_at": entry.created_at,
    }
