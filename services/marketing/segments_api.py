"""The segments HTTP API.

`/api/v1/segments` {id, name, description, kind (dynamic|static), filter, member_count,
version, created_at, updated_at}: list (paged, ?kind=, ?q=, ?sort=), create (201, Location,
ETag), get (ETag), PATCH (If-Match), DELETE (204, If-Match). A dynamic segment's filter is
checked when saved (an unknown field or operator, or a bad value, is a 422 naming it; the
language is in segment_filters.py); a static segment has none.

`GET /segments/{id}/members` (paged, by email) and `GET /segments/{id}/count`;
for static segments `POST /segments/{id}/members` {contact_ids: up to 1000} and
`DELETE /segments/{id}/members/{contact_id}`. Every role reads; marketing and admin change.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from marshmallow import ValidationError, fields, validate, validates_schema
from sqlalchemy import select

from services.marketing import segments
from services.marketing.models import Contact, Segment
from services.marketing.segment_filters import filter_condition
from shared.auth import require_role
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.schemas import FilterGroupSchema, StrictSchema
from shared.search import words_condition
from shared.web import (
    ApiError,
    created_with_etag,
    current_db,
    expected_version,
    load_body,
    no_content,
    parse_args,
    with_etag,
)

segments_api = Blueprint("segments", __name__, url_prefix="/api/v1")
BASE = "/segments"
SEGMENT_SORTS = {
    "name": SortKey("name", Segment.name),
    "created_at": SortKey("created_at", Segment.created_at),
    "updated_at": SortKey("updated_at", Segment.updated_at),
}
MEMBER_SORT = [SortKey("email", Contact.email_key, attribute="email_key")]
NOT_BLANK = validate.Regexp(r"^\s*\S", error="Cannot be blank.")


# --- schemas ----------------------------------------------------------------------------


class SegmentFilterSchema(StrictSchema):
    """API.md's filter groups: OR of groups, AND of the filters in each."""

    filter_groups = fields.List(
        fields.Nested(FilterGroupSchema), required=True, validate=validate.Length(max=10)
    )


class SegmentPatchSchema(StrictSchema):
    """The fields a segment has; a PATCH gives any of them (the kind never changes)."""

    name = fields.String(validate=[validate.Length(min=1, max=200), NOT_BLANK])
    description = fields.String(allow_none=True, validate=validate.Length(max=1000))
    kind = fields.String(validate=validate.OneOf(segments.KINDS))
    filter = fields.Nested(SegmentFilterSchema, allow_none=True)

    @validates_schema
    def valid_filter(self, data: dict[str, Any], **_: Any) -> None:
        """Every filter names a known field, an operator it takes and a value that fits."""
        # A schema validator: it runs only when the filter's shape loaded without errors.
        if data.get("filter") is None:
            return
        try:
            filter_condition(data["filter"])
        except ApiError as error:
            raise ValidationError({"filter": error.errors or {}}) from None


segment_patch_in = SegmentPatchSchema()


class SegmentInSchema(SegmentPatchSchema):
    """A new segment: a name; a filter when dynamic (the default kind)."""

    id = fields.UUID(load_default=None)
    name = fields.String(required=True, validate=[validate.Length(min=1, max=200), NOT_BLANK])
    description = fields.String(
        allow_none=True, load_default=None, validate=validate.Length(max=1000)
    )
    kind = fields.String(load_default="dynamic", validate=validate.OneOf(segments.KINDS))
    filter = fields.Nested(SegmentFilterSchema, allow_none=True, load_default=None)

    @validates_schema
    def filter_fits_kind(self, data: dict[str, Any], **_: Any) -> None:
        """A dynamic segment has a filter, a static one none."""
        if data.get("kind") == "dynamic" and data.get("filter") is None:
            raise ValidationError(segments.DYNAMIC_NEEDS_FILTER, "filter")
        if data.get("kind") == "static" and data.get("filter") is not None:
            raise ValidationError(segments.STATIC_HAS_NO_FILTER, "filter")


segment_in_in = SegmentInSchema()


class SegmentListArgsSchema(StrictSchema):
    """The list's query parameters."""

    kind = fields.String(validate=validate.OneOf(segments.KINDS))
    q = fields.String(validate=validate.Length(max=200))
    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


segment_list_query = SegmentListArgsSchema()


class PageArgsSchema(StrictSchema):
    """A page of members: limit and cursor only."""

    limit = fields.String()
    cursor = fields.String()


page_query = PageArgsSchema()


class MembersInSchema(StrictSchema):
    """Contacts to add to a static segment."""

    contact_ids = fields.List(
        fields.UUID(), required=True, validate=validate.Length(min=1, max=segments.MAX_ADDED)
    )


members_in_in = MembersInSchema()


# --- HTTP -------------------------------------------------------------------------------


def writer() -> None:
    """Marketing and admins change segments; else 403."""
    require_role("marketing")


@segments_api.get(BASE)
def list_segments() -> Any:
    """Segments sorted by name (or ?sort=), filtered by ?kind= and ?q=, paged."""
    args = parse_args(segment_list_query)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), SEGMENT_SORTS, "name")
    statement = select(Segment)
    if "kind" in args:
        statement = statement.where(Segment.kind == args["kind"])
    statement = statement.where(words_condition(args.get("q"), Segment.name, Segment.description))
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, Segment.id, limit=limit, cursor=cursor
        )
        return page_answer([segments.segment_view(session, row) for row in rows], next_cursor)


@segments_api.post(BASE)
def create() -> Any:
    """Create a segment (201, Location, ETag)."""
    writer()
    data = load_body(segment_in_in)
    with current_db().session() as session:
        body = segments.segment_view(session, segments.create_segment(session, data))
    return created_with_etag(body, f"/api/v1{BASE}/{body['id']}")


@segments_api.get(f"{BASE}/<uuid:segment_id>")
def get(segment_id: Any) -> Any:
    """One segment with its member count, its version as ETag."""
    with current_db().session() as session:
        segment = segments.get_segment(session, segment_id)
        return with_etag(segments.segment_view(session, segment))


@segments_api.patch(f"{BASE}/<uuid:segment_id>")
def update(segment_id: Any) -> Any:
    """Change a segment (If-Match honoured)."""
    writer()
    changes, version = load_body(segment_patch_in), expected_version()
    with current_db().session() as session:
        segment = segments.get_segment(session, segment_id, for_update=True)
        segments.update_segment(session, segment, changes, expected_version=version)
        body = segments.segment_view(session, segment)
    return with_etag(body)


@segments_api.delete(f"{BASE}/<uuid:segment_id>")
def delete(segment_id: Any) -> Any:
    """Delete a segment (204, If-Match honoured)."""
    writer()
    version = expected_version()
    with current_db().session() as session:
        segment = segments.get_segment(session, segment_id, for_update=True)
        segments.delete_segment(session, segment, expected_version=version)
    return no_content()


@segments_api.get(f"{BASE}/<uuid:segment_id>/members")
def members(segment_id: Any) -> Any:
    """The members now, by email: {id, email, first_name, last_name, lifecycle_stage}."""
    parse_args(page_query)
    limit, cursor = list_params()
    with current_db().session() as session:
        segment = segments.get_segment(session, segment_id)
        statement = segments.segment_members_query(session, segment)
        rows, next_cursor = paginate(
            session, statement, MEMBER_SORT, Contact.id, limit=limit, cursor=cursor
        )
        return page_answer([segments.member_view(row) for row in rows], next_cursor)


@segments_api.get(f"{BASE}/<uuid:segment_id>/count")
def count(segment_id: Any) -> Any:
    """How many members the segment has now."""
    with current_db().session() as session:
        segment = segments.get_segment(session, segment_id)
        return jsonify({"id": segment.id, "member_count": segments.count_members(session, segment)})


@segments_api.post(f"{BASE}/<uuid:segment_id>/members")
def add_members(segment_id: Any) -> Any:
    """Add contacts to a static segment: {added, member_count}; 409 for a dynamic one."""
    writer()
    data = load_body(members_in_in)
    with current_db().session() as session:
        segment = segments.get_segment(session, segment_id, for_update=True)
        added = segments.add_members(session, segment, data["contact_ids"])
        body = {"added": added, "member_count": segments.count_members(session, segment)}
    return jsonify(body)


@segments_api.delete(f"{BASE}/<uuid:segment_id>/members/<uuid:contact_id>")
def remove_member(segment_id: Any, contact_id: Any) -> Any:
    """Take a contact off a static segment (204); 404 when it is not on it."""
    writer()
    with current_db().session() as session:
        segment = segments.get_segment(session, segment_id, for_update=True)
        segments.remove_member(session, segment, str(contact_id))
    return no_content()
