"""The public consent links: one-click unsubscribe and double opt-in confirmation.

- `GET /api/v1/unsubscribe/{token}` (`?scope=all`: every list) and `POST` to the same
  path (RFC 8058 one-click: the form body `List-Unsubscribe=One-Click`, optionally
  `scope=all`; JSON `{"scope": ...}` or no body too) unsubscribe the token's own contact
  and answer 200 `{"status": "unsubscribed", "list", "all_lists"}`. Twice is fine.
- `GET /api/v1/subscriptions/confirm/{token}` confirms a double opt-in: 200
  `{"status": "subscribed", "list"}`; again: the same answer.

No access token: the signed token in the path is the only permission (app.py and the
gateway list both paths in their `PUBLIC_PREFIXES`). A token that is malformed, tampered
with, expired or void is a 404 that says nothing more; no answer tells more than the
list's name. A browser (Accept: text/html) gets a minimal HTML page instead of JSON. HEAD
requests (link scanners) check the token and change nothing. The client's address (the
gateway's last X-Forwarded-For entry) and user agent go into the consent ledger.
"""

from __future__ import annotations

import html
from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import fields, validate
from werkzeug.exceptions import RequestEntityTooLarge

from services.marketing import subscriptions, unsubscribe
from services.marketing.ledger import Origin
from shared.schemas import StrictSchema
from shared.web import (
    ApiError,
    current_db,
    current_settings,
    form_fields,
    invalid,
    json_body,
    load_or_422,
    parse_args,
)

unsubscribe_api = Blueprint("unsubscribe", __name__, url_prefix="/api/v1")

PUBLIC_MAX_BYTES = 4 * 1024
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
SCOPES = ("list", "all")
NO_STORE = "no-store, no-cache, must-revalidate, private"


class ScopeArgsSchema(StrictSchema):
    """`?scope=all` leaves every list, not only the link's."""

    scope = fields.String(validate=validate.OneOf(SCOPES))


scope_query = ScopeArgsSchema()


class OneClickSchema(ScopeArgsSchema):
    """What an RFC 8058 one-click POST (or our own page's button) sends."""

    list_unsubscribe = fields.String(
        data_key="List-Unsubscribe", validate=validate.Equal("One-Click")
    )


one_click_in = OneClickSchema()


def client_origin(source: str) -> Origin:
    """The public request as a ledger origin: the client's address and user agent."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    address = forwarded.split(",")[-1].strip() or request.remote_addr or ""
    agent = request.user_agent.string
    return Origin(source, ip=address[:45] or None, user_agent=agent or None)


def _invalid_link() -> ApiError:
    return ApiError(404, "Not Found", "This link is not valid or has expired")


def _wants_html() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


def _page(title: str, message: str, *, offer_all: bool) -> str:
    button = (
        '<form method="post"><input type="hidden" name="scope" value="all">'
        "<button>Unsubscribe from all marketing email</button></form>"
        if offer_all
        else ""
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><meta name="robots" '
        f'content="noindex"><title>{title}</title></head><body><p>{html.escape(message)}</p>'
        f"{button}</body></html>"
    )


def _answer(body: dict[str, Any], page: str) -> Response:
    response = Response(page, mimetype="text/html") if _wants_html() else jsonify(body)
    response.headers["Cache-Control"] = NO_STORE
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


def _unsubscribed(answer: dict[str, Any]) -> Response:
    if answer["all_lists"]:
        message = "You will receive no more marketing email from us."
    elif answer["list"]:
        message = f"You are unsubscribed from {answer['list']}."
    else:
        message = "You are unsubscribed."
    return _answer(answer, _page("Unsubscribed", message, offer_all=not answer["all_lists"]))


def _posted_choice() -> dict[str, Any]:
    """The one-click body: empty, a form or JSON (422 for anything else in it)."""
    request.max_content_length = PUBLIC_MAX_BYTES
    too_large = ApiError(413, "Content Too Large", f"The limit is {PUBLIC_MAX_BYTES} bytes")
    if request.content_length is not None and request.content_length > PUBLIC_MAX_BYTES:
        raise too_large
    try:
        if not request.get_data(cache=True):
            return {}
        if request.mimetype in FORM_TYPES:
            return load_or_422(one_click_in, form_fields())
    except RequestEntityTooLarge:
        raise too_large from None
    if not request.is_json:
        raise ApiError(415, "Unsupported Media Type", "Send a form or JSON")
    data = json_body()
    if not isinstance(data, dict):
        raise ApiError(400, "Bad Request", "The request body must be a JSON object")
    return load_or_422(one_click_in, data)


def _unsubscribe(token: str, scope: str | None) -> Response:
    claim = unsubscribe.read_unsubscribe_token(current_settings(), token)
    if claim is None:
        raise _invalid_link()
    if request.method == "HEAD":
        return Response(status=200, headers={"Cache-Control": NO_STORE})
    origin = client_origin(subscriptions.UNSUBSCRIBE_LINK)
    with current_db().session() as session:
        answer = subscriptions.unsubscribe_by_link(
            session, claim, origin, everything=scope == "all"
        )
    return _unsubscribed(answer)


@unsubscribe_api.get("/unsubscribe/<token>")
def unsubscribe_link(token: str) -> Response:
    """Unsubscribe the link's contact from its list (`?scope=all`: from every list)."""
    return _unsubscribe(token, parse_args(scope_query).get("scope"))


@unsubscribe_api.post("/unsubscribe/<token>")
def one_click_unsubscribe(token: str) -> Response:
    """RFC 8058 one-click unsubscribe (`List-Unsubscribe=One-Click`), answered 200."""
    if request.args:
        raise invalid({name: ["Unknown parameter."] for name in request.args})
    return _unsubscribe(token, _posted_choice().get("scope"))


strict_query = StrictSchema()


@unsubscribe_api.get("/subscriptions/confirm/<token>")
def confirm_subscription(token: str) -> Response:
    """Confirm a double opt-in subscription from the link mailed for it."""
    parse_args(strict_query)
    claim = unsubscribe.read_confirm_token(current_settings(), token)
    if claim is None:
        raise _invalid_link()
    if request.method == "HEAD":
        return Response(status=200, headers={"Cache-Control": NO_STORE})
    with current_db().session() as session:
        _row, sub_list = subscriptions.confirm(
            session, claim, client_origin(subscriptions.DOUBLE_OPT_IN)
        )
        body = {"status": subscriptions.SUBSCRIBED, "list": sub_list.name}
    page = _page("Subscribed", f"Thank you: you are subscribed to {body['list']}.", offer_all=False)
    return _answer(body, page)
