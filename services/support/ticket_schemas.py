"""What the tickets and comments API accepts (validation) and answers (representation)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from marshmallow import ValidationError, fields, post_load, validate, validates_schema

from services.support.models import CHANNELS, PRIORITIES, STATUSES
from shared.events import isoformat
from shared.schemas import JsonBoolean, StrictSchema, uuid_string

NOT_BLANK = validate.Regexp(r"^\s*\S", error="Cannot be blank.")
# Tags are simple words, so a tag filter can match them inside the stored JSON list.
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-.:/]{0,49}$"
TAG = validate.Regexp(
    TAG_PATTERN, error="Use 1 to 50 letters, digits, '_', '-', '.', ':' or '/' (no spaces)."
)
MAX_TAGS = 20
MAX_BODY = 100_000
AUTHOR_KINDS = ("agent", "customer")


def normalize_tags(tags: list[str]) -> list[str]:
    """Tags lower-cased and without repeats, in the order given."""
    return list(dict.fromkeys(tag.lower() for tag in tags))


class RequesterSchema(StrictSchema):
    """Someone who wrote in and is not a contact yet."""

    email = fields.Email(required=True, validate=validate.Length(max=254))
    name = fields.String(allow_none=True, validate=validate.Length(max=200))


class TicketFieldsSchema(StrictSchema):
    """The fields of a ticket that clients write, on create and on change."""

    subject = fields.String(required=True, validate=[validate.Length(min=1, max=300), NOT_BLANK])
    description = fields.String(allow_none=True, validate=validate.Length(max=MAX_BODY))
    channel = fields.String(validate=validate.OneOf(CHANNELS))
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    assignee_id = uuid_string()
    tags = fields.List(fields.String(validate=TAG), validate=validate.Length(max=MAX_TAGS))

    @post_load
    def clean_tags(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if "tags" in data:
            data["tags"] = normalize_tags(data["tags"])
        return data


class TicketInSchema(TicketFieldsSchema):
    """A new ticket: for a known contact (`contact_id`) or for a new `requester`."""

    id = fields.UUID()
    contact_id = fields.UUID()
    requester = fields.Nested(RequesterSchema)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def names_who_wrote_in(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        given = set(original) if isinstance(original, dict) else set()
        if {"contact_id", "requester"} <= given:
            raise ValidationError("Give contact_id or requester, not both.", "requester")
        if not given & {"contact_id", "requester"}:
            raise ValidationError(
                "Give the contact_id of a contact, or a requester {email, name}.", "contact_id"
            )


class TicketPatchSchema(TicketFieldsSchema):
    """A change to a ticket (load with partial=True); `id` only inside a batch update."""

    id = fields.UUID()
    status = fields.String(validate=validate.OneOf(STATUSES))


class AssignSchema(StrictSchema):
    """`POST /tickets/{id}/assign`: an agent, or null to unassign."""

    assignee_id = fields.UUID(required=True, allow_none=True)


class CommentInSchema(StrictSchema):
    """A reply or internal note; by default a public reply from the calling agent."""

    body = fields.String(required=True, validate=[validate.Length(min=1, max=MAX_BODY), NOT_BLANK])
    public = JsonBoolean(load_default=True)
    author_kind = fields.String(load_default="agent", validate=validate.OneOf(AUTHOR_KINDS))

    @validates_schema
    def customers_write_in_public(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("author_kind") == "customer" and data.get("public") is False:
            raise ValidationError("A customer's comment is always public.", "public")


# --- query parameters ----------------------------------------------------------------------


class ChoiceList(fields.String):
    """A comma-separated list of allowed values (`open,pending`), loaded as a list."""

    def __init__(self, choices: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.choices = choices

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[str]:
        text = super()._deserialize(value, attr, data, **kwargs)
        items = [part.strip() for part in text.split(",")]
        if not all(item in self.choices for item in items):
            raise ValidationError(f"Choose from {', '.join(self.choices)} (comma separated).")
        return list(dict.fromkeys(items))


class AssigneeFilter(fields.String):
    """An assignee's UUID, or `none` for unassigned tickets."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if text == "none":
            return text
        try:
            return str(uuid.UUID(text))
        except ValueError:
            raise ValidationError("Give a UUID, or none for unassigned tickets.") from None


class ListArgsSchema(StrictSchema):
    """The query parameters every list takes besides its filters."""

    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


LIST_INCLUDES = ("csat",)


class TicketListArgsSchema(ListArgsSchema):
    q = fields.String(validate=validate.Length(max=200))
    status = ChoiceList(STATUSES)
    priority = ChoiceList(PRIORITIES)
    channel = ChoiceList(CHANNELS)
    assignee_id = AssigneeFilter()
    contact_id = fields.UUID()
    tag = fields.String(validate=TAG)
    breached = fields.Boolean()
    # `include=csat`: each ticket also carries its rating (or null), so a caller showing
    # tickets with their ratings (the customer view) makes one call instead of one a ticket.
    include = ChoiceList(LIST_INCLUDES)


class CommentListArgsSchema(ListArgsSchema):
    public = fields.Boolean()
    author_kind = fields.String(validate=validate.OneOf(AUTHOR_KINDS))


# --- representations -----------------------------------------------------------------------


def _moment(value: datetime | None) -> str | None:
    return isoformat(value) if value is not None else None


def sla_view(ticket: Any) -> dict[str, Any]:
    """The SLA state of a ticket: its deadlines, what was breached, whether it is paused."""
    return {
        "policy_id": ticket.sla_policy_id,
        "first_response_due_at": _moment(ticket.first_response_due_at),
        "resolution_due_at": _moment(ticket.resolution_due_at),
        "first_response_breached": ticket.first_response_breached_at is not None,
        "resolution_breached": ticket.resolution_breached_at is not None,
        "paused": ticket.status == "pending",
    }


def ticket_view(ticket: Any) -> dict[str, Any]:
    """A ticket as the API answers it (and as its events carry it)."""
    return {
        "id": ticket.id,
        "contact_id": ticket.contact_id,
        "requester_email": ticket.requester_email,
        "requester_name": ticket.requester_name,
        "subject": ticket.subject,
        "description": ticket.description,
        "channel": ticket.channel,
        "priority": ticket.priority,
        "status": ticket.status,
        "assignee_id": ticket.assignee_id,
        "tags": list(ticket.tags or []),
        "first_response_due_at": _moment(ticket.first_response_due_at),
        "resolution_due_at": _moment(ticket.resolution_due_at),
        "sla_breached": bool(ticket.sla_breached),
        "sla": sla_view(ticket),
        "first_responded_at": _moment(ticket.first_responded_at),
        "resolved_at": _moment(ticket.resolved_at),
        "closed_at": _moment(ticket.closed_at),
        "reopened_count": ticket.reopened_count,
        "version": ticket.version,
        "created_at": _moment(ticket.created_at),
        "updated_at": _moment(ticket.updated_at),
    }


def comment_view(comment: Any) -> dict[str, Any]:
    """A comment as the API answers it."""
    return {
        "id": comment.id,
        "ticket_id": comment.ticket_id,
        "body": comment.body,
        "public": comment.public,
        "author_kind": comment.author_kind,
        "author_id": comment.author_id,
        "created_at": _moment(comment.created_at),
    }
