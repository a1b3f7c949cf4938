"""The templates HTTP API: stored email templates, and previews of them or of inline content.

`/api/v1/templates` {id, name (unique), subject, body_text, body_html, category
(transactional|marketing), description, version, created_at, updated_at}. The sources are
checked when saved (a syntax error is a 422 naming the field and the line); a preview
renders with the variables given exactly as a send would (a missing one is a 422 naming
it). Changes need the role marketing, support or admin; reading and previewing any role
that may POST (viewers are read only).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, request
from marshmallow import ValidationError, fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.notifications import templates
from services.notifications.models import CATEGORIES, Template, new_id
from shared.auth import require_role
from shared.db import take_write_lock
from shared.events import isoformat, utcnow
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.schemas import StrictSchema
from shared.search import words_condition
from shared.web import (
    check_version,
    conflict,
    created_with_etag,
    current_db,
    expected_version,
    load_body,
    no_content,
    not_found,
    parse_args,
    with_etag,
)

templates_api = Blueprint("templates", __name__, url_prefix="/api/v1")
BASE = "/templates"
TEMPLATE_SORTS = {
    "name": SortKey("name", Template.name),
    "created_at": SortKey("created_at", Template.created_at),
    "updated_at": SortKey("updated_at", Template.updated_at),
}
NOT_BLANK = validate.Regexp(r"^\s*\S", error="Cannot be blank.")


# --- schemas ----------------------------------------------------------------------------


def _valid_template(*, html: bool) -> Callable[[str], None]:
    """A validator: the text must compile as a template (else "Line N: why")."""

    def check(source: str) -> None:
        problem = templates.syntax_error(source, html=html)
        if problem is not None:
            raise ValidationError(problem)

    return check


def _not_a_uuid(name: str) -> None:
    """A name that reads as a UUID would be taken for an id where templates are named."""
    try:
        uuid.UUID(name.strip())
    except ValueError:
        return
    raise ValidationError("A name cannot be a UUID.")


def _subject(**kwargs: Any) -> fields.String:
    length = validate.Length(min=1, max=templates.MAX_SUBJECT_SOURCE_CHARS)
    return fields.String(validate=[length, NOT_BLANK, _valid_template(html=False)], **kwargs)


def _body(*, html: bool, **kwargs: Any) -> fields.String:
    return fields.String(validate=_valid_template(html=html), **kwargs)


class TemplatePatchSchema(StrictSchema):
    """The fields a template has; a PATCH gives any of them."""

    name = fields.String(validate=[validate.Length(min=1, max=200), NOT_BLANK, _not_a_uuid])
    subject = _subject()
    body_text = _body(html=False)
    body_html = _body(html=True, allow_none=True)
    category = fields.String(validate=validate.OneOf(CATEGORIES))
    description = fields.String(allow_none=True, validate=validate.Length(max=1000))


template_patch_in = TemplatePatchSchema()


class TemplateInSchema(TemplatePatchSchema):
    """A new template: a name, a subject and a text body at least."""

    id = fields.UUID(load_default=None)
    name = fields.String(
        required=True, validate=[validate.Length(min=1, max=200), NOT_BLANK, _not_a_uuid]
    )
    subject = _subject(required=True)
    body_text = _body(html=False, required=True)
    body_html = _body(html=True, allow_none=True, load_default=None)
    category = fields.String(load_default="transactional", validate=validate.OneOf(CATEGORIES))


template_in_in = TemplateInSchema()


class TemplateListArgsSchema(StrictSchema):
    """The list's query parameters."""

    category = fields.String(validate=validate.OneOf(CATEGORIES))
    q = fields.String(validate=validate.Length(max=200))
    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


template_list_query = TemplateListArgsSchema()


class PreviewSchema(StrictSchema):
    """The variables to render a stored template with."""

    variables = fields.Dict(keys=fields.String(), load_default=dict)


preview_in = PreviewSchema()


class InlinePreviewSchema(PreviewSchema):
    """Content not stored, rendered as a template would be."""

    subject = _subject(required=True)
    body_text = _body(html=False, load_default="")
    body_html = _body(html=True, allow_none=True, load_default=None)


inline_preview_in = InlinePreviewSchema()


def template_view(template: Template) -> dict[str, Any]:
    """A template as the API answers it."""
    return {
        "id": template.id,
        "name": template.name,
        "subject": template.subject,
        "body_text": template.body_text,
        "body_html": template.body_html,
        "category": template.category,
        "description": template.description,
        "version": template.version,
        "created_at": isoformat(template.created_at),
        "updated_at": isoformat(template.updated_at),
    }


def rendered_view(rendered: templates.Rendered) -> dict[str, Any]:
    """What a preview answers: the mail as it would be sent."""
    return {
        "subject": rendered.subject,
        "body_text": rendered.body_text,
        "body_html": rendered.body_html,
    }


# --- the template changes -------------------------------------------------------------


def get_template(session: Session, template_id: Any, *, for_update: bool = False) -> Template:
    """A template by id, or 404; `for_update` locks it so changes queue up."""
    statement = select(Template).where(Template.id == str(template_id))
    if for_update:
        take_write_lock(session)
        statement = statement.with_for_update()
    template = session.scalars(statement).first()
    if template is None:
        raise not_found("Template", template_id)
    return template


def _ensure_name_free(session: Session, name: str, template_id: str | None = None) -> None:
    other = session.scalars(select(Template).where(Template.name == name)).first()
    if other is not None and other.id != template_id:
        raise conflict(
            f"A template named {name!r} exists already: {other.id}",
            {"name": ["A template with this name exists already."]},
        )


def create_template(session: Session, data: Mapping[str, Any]) -> Template:
    """A new template (version 1); 409 when the id or the name is taken."""
    template_id = str(data.get("id") or new_id())
    take_write_lock(session)
    if session.get(Template, template_id) is not None:
        raise conflict(f"A template with id {template_id} exists already")
    name = data["name"].strip()
    _ensure_name_free(session, name)
    now = utcnow()
    template = Template(
        **{**data, "id": template_id, "name": name},
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(template)
    session.flush()
    return template


def update_template(
    session: Session,
    template: Template,
    changes: Mapping[str, Any],
    *,
    expected_version: int | None = None,
) -> Template:
    """Change some fields (a new version when something changes); 409 on a taken name."""
    check_version(template.version, expected_version)
    changes = dict(changes)
    if "name" in changes:
        changes["name"] = changes["name"].strip()
    changes = {key: value for key, value in changes.items() if getattr(template, key) != value}
    if not changes:
        return template
    if "name" in changes:
        _ensure_name_free(session, changes["name"], template.id)
    for key, value in changes.items():
        setattr(template, key, value)
    template.version += 1
    template.updated_at = utcnow()
    session.flush()
    return template


def delete_template(
    session: Session, template: Template, *, expected_version: int | None = None
) -> None:
    """Delete a template; mail already sent from it keeps its own copy."""
    check_version(template.version, expected_version)
    session.delete(template)


# --- HTTP -------------------------------------------------------------------------------


def writer() -> None:
    """Marketing, support and admins change templates; else 403."""
    require_role("marketing", "support")


@templates_api.get(BASE)
def list_templates() -> Any:
    """Templates sorted by name (or ?sort=), filtered by ?category= and ?q=, paged."""
    args = parse_args(template_list_query, request.args)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), TEMPLATE_SORTS, "name")
    statement = select(Template)
    if "category" in args:
        statement = statement.where(Template.category == args["category"])
    statement = statement.where(words_condition(args.get("q"), Template.name, Template.description))
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, Template.id, limit=limit, cursor=cursor
        )
        return page_answer([template_view(template) for template in rows], next_cursor)


@templates_api.post(BASE)
def create() -> Any:
    """Create a template (201, Location, ETag); 409 if the name is taken."""
    writer()
    data = load_body(template_in_in)
    with current_db().session() as session:
        body = template_view(create_template(session, data))
    return created_with_etag(body, f"/api/v1{BASE}/{body['id']}")


@templates_api.get(f"{BASE}/<uuid:template_id>")
def get(template_id: Any) -> Any:
    """One template, with its version as ETag."""
    with current_db().session() as session:
        return with_etag(template_view(get_template(session, template_id)))


@templates_api.patch(f"{BASE}/<uuid:template_id>")
def update(template_id: Any) -> Any:
    """Change a template (If-Match honoured)."""
    writer()
    changes, version = load_body(template_patch_in), expected_version()
    with current_db().session() as session:
        template = get_template(session, template_id, for_update=True)
        body = template_view(update_template(session, template, changes, expected_version=version))
    return with_etag(body)


@templates_api.delete(f"{BASE}/<uuid:template_id>")
def delete(template_id: Any) -> Any:
    """Delete a template (204, If-Match honoured)."""
    writer()
    version = expected_version()
    with current_db().session() as session:
        template = get_template(session, template_id, for_update=True)
        delete_template(session, template, expected_version=version)
    return no_content()


@templates_api.post(f"{BASE}/<uuid:template_id>/preview")
def preview(template_id: Any) -> Any:
    """The template rendered with `variables`: {subject, body_text, body_html}; 422 if one
    it uses is missing."""
    data = load_body(preview_in)
    with current_db().session() as session:
        template = get_template(session, template_id)
        return rendered_view(templates.render_template(template, data["variables"]))


@templates_api.post(f"{BASE}/preview")
def preview_inline() -> Any:
    """Inline content (subject, body_text, body_html) rendered with `variables`."""
    data = load_body(inline_preview_in)
    rendered = templates.render_source(
        data["subject"], data["body_text"], data["body_html"], data["variables"]
    )
    return rendered_view(rendered)
