"""The CSAT HTTP API: agents enter and read ratings; customers rate through a signed link.

- `POST /api/v1/tickets/{id}/csat` (role support or admin) and `GET` (any role).
- `GET /api/v1/csat/{token}` and `POST /api/v1/csat/{token}`: public, no access token
  (app.py lists the prefix); the signed token in the path is the permission. A browser
  (preferring text/html) gets the rating pages (`csat_pages`; `?rating=N`, from the mail's
  one-click score links, preselects a score): a GET shows, only a POST records. An API
  client (Accept: application/json) gets JSON as before. The body may be JSON or an HTML
  form post. A bad, tampered or expired token is a 404.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import fields, validate
from werkzeug.exceptions import RequestEntityTooLarge

from services.support import csat, csat_pages, tickets
from shared.auth import require_role
from shared.pages import page_headers, wants_html
from shared.schemas import StrictSchema
from shared.web import (
    ApiError,
    created,
    current_db,
    current_settings,
    invalid,
    json_body,
    load_body,
    load_or_422,
    not_found,
    parse_args,
)

csat_api = Blueprint("csat", __name__, url_prefix="/api/v1")

PUBLIC_MAX_BYTES = 64 * 1024  # a 5000-character comment, escaped, fits with room to spare
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class CsatSchema(StrictSchema):
    """A rating as JSON: the number must be a JSON integer."""

    rating = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=5))
    comment = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=csat.MAX_COMMENT_CHARS)
    )


class CsatFormSchema(CsatSchema):
    """A rating from an HTML form, where every value is text ("4")."""

    rating = fields.Integer(required=True, validate=validate.Range(min=1, max=5))


class ChosenScoreSchema(StrictSchema):
    """`?rating=N`: the score a one-click link in the mail chose (shown, not recorded)."""

    rating = fields.Integer(validate=validate.Range(min=1, max=5))


csat_in = CsatSchema()
csat_form_in = CsatFormSchema()
chosen_score = ChosenScoreSchema()


def _ticket_id(value: str) -> str:
    """The path's ticket id; a value that is no UUID names no ticket (404)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise not_found("Ticket", value) from None


@csat_api.post("/tickets/<ticket_id>/csat")
def rate_ticket(ticket_id: str) -> Response:
    """An agent enters the customer's rating (given on the phone, say)."""
    require_role("support")
    data = load_body(csat_in)
    with current_db().session() as session:
        ticket = tickets.lock_ticket(session, _ticket_id(ticket_id))
        entry = csat.record_rating(session, ticket, data["rating"], data["comment"])
        body = csat.rating_view(entry)
    return created(body, f"/api/v1/tickets/{ticket.id}/csat")


@csat_api.get("/tickets/<ticket_id>/csat")
def ticket_rating(ticket_id: str) -> Response:
    with current_db().session() as session:
        return jsonify(csat.rating_view(csat.rating_of(session, _ticket_id(ticket_id))))


# --- the public rating link -----------------------------------------------------------------


def _too_large() -> ApiError:
    return ApiError(413, "Content Too Large", f"A rating is limited to {PUBLIC_MAX_BYTES} bytes")


def _form_fields() -> dict[str, Any]:
    if request.files:
        raise invalid({name: ["Files are not accepted."] for name in request.files})
    raw = request.form.to_dict(flat=False)
    repeated = sorted(name for name, values in raw.items() if len(values) > 1)
    if repeated:
        raise invalid({name: ["Given more than once."] for name in repeated})
    return {name: values[0] for name, values in raw.items() if values[0] != ""}


def posted_rating() -> dict[str, Any]:
    """The rating posted to the public link, from JSON or an HTML form (422 if invalid)."""
    request.max_content_length = PUBLIC_MAX_BYTES
    if request.content_length is not None and request.content_length > PUBLIC_MAX_BYTES:
        raise _too_large()
    try:
        if request.mimetype in FORM_TYPES:
            return load_or_422(csat_form_in, _form_fields())
        data = json_body()
    except RequestEntityTooLarge:
        raise _too_large() from None
    if not isinstance(data, dict):
        raise ApiError(400, "Bad Request", "The request body must be a JSON object")
    return load_or_422(csat_in, data)


def _link_ticket_id(token: str) -> str | None:
    """The ticket a rating link names; None when it is not a valid link."""
    try:
        return csat.ticket_id_of(current_settings(), token)
    except ApiError:
        return None


def _not_valid() -> Response:
    if wants_html():
        return csat_pages.link_not_valid()
    raise ApiError(404, "Not Found", "This rating link is not valid or has expired")


@csat_api.get("/csat/<token>")
def rating_page(token: str) -> Response:
    """The rating page (or, as JSON, the ticket's subject and whether it is rated): a GET
    records nothing."""
    chosen = parse_args(chosen_score).get("rating")
    ticket_id = _link_ticket_id(token)
    if ticket_id is None:
        return _not_valid()
    try:
        view = csat_pages.public_view_of(ticket_id)
    except ApiError:  # deleted since the link was sent
        return _not_valid()
    if wants_html():
        return csat_pages.rating_form(view, chosen=chosen)
    return page_headers(jsonify(view))


@csat_api.post("/csat/<token>")
def rate_by_link(token: str) -> Response:
    """The customer's own rating, once per ticket (a second one is 409)."""
    ticket_id = _link_ticket_id(token)
    if ticket_id is None:
        return _not_valid()
    if wants_html():
        return _rate_from_page(ticket_id)
    data = posted_rating()
    with current_db().session() as session:
        ticket = tickets.lock_ticket(session, ticket_id)
        entry = csat.record_rating(session, ticket, data["rating"], data["comment"])
        body = {**csat.public_view(session, ticket), "rating": entry.rating}
    response = page_headers(jsonify(body))
    response.status_code = 201
    return response


def _rate_from_page(ticket_id: str) -> Response:
    """The page's form posted: the thank-you page, or the form again saying what to fix."""
    try:
        data = posted_rating()
    except ApiError as error:
        if error.status != 422:
            raise
        view = csat_pages.public_view_of(ticket_id)
        chosen = csat_pages.number(request.form.get("rating"))
        comment = request.form.get("comment", "")[: csat.MAX_COMMENT_CHARS]
        return csat_pages.rating_form(
            view, chosen=chosen, comment=comment, errors=error.errors, status=422
        )
    try:
        with current_db().session() as session:
            ticket = tickets.lock_ticket(session, ticket_id)
            view = csat.public_view(session, ticket)
            if view["can_rate"]:
                csat.record_rating(session, ticket, data["rating"], data["comment"])
    except ApiError as error:
        if error.status == 404:
            return csat_pages.link_not_valid()
        if error.status == 409:  # rated meanwhile, by a second tab or a double click
            return csat_pages.already_rated()
        raise
    return csat_pages.state_page(view, 409) or csat_pages.thanks(data["rating"], view["subject"])
