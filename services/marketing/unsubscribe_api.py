"""The public consent links: one-click unsubscribe and double opt-in confirmation.

- `GET /api/v1/unsubscribe/{token}` (`?scope=all`: every list) changes nothing: mail
  scanners and link previews fetch links before anyone clicks. A browser gets a page
  asking to confirm (a form that POSTs back); an API client gets 200
  `{"status": "confirm", "list", "all_lists"}`, what a POST would do.
- `POST` to the same path unsubscribes (RFC 8058 one-click: the form body
  `List-Unsubscribe=One-Click`, optionally `scope=all`; JSON `{"scope": ...}` or no body
  too) the token's own contact: 200 `{"status": "unsubscribed", "list", "all_lists"}`,
  or the thank-you page. Twice is fine.
- `GET /api/v1/subscriptions/confirm/{token}` changes nothing either (a scanner's fetch
  must not give consent nobody gave): a browser gets a page asking to confirm, an API
  client 200 `{"status": "confirm", "list"}`. A `POST` to the same path confirms the double
  opt-in: 200 `{"status": "subscribed", "list"}`; again: the same answer.

No access token: the signed token in the path is the only permission (app.py and the
gateway list both paths in their `PUBLIC_PREFIXES`). A token that is malformed, tampered
with, expired or void is a 404 that says nothing more; no answer tells more than the
list's name. Pages (`templates/`, `shared.pages`) load nothing and run no script: a strict
Content-Security-Policy. HEAD requests (link scanners) check the token and change nothing.
The client's address (the gateway's last X-Forwarded-For entry) and user agent go into the
consent ledger.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request
from marshmallow import fields, validate
from werkzeug.exceptions import RequestEntityTooLarge

from services.marketing import subscriptions, unsubscribe
from services.marketing.ledger import Origin
from shared.pages import Pages, page_headers, wants_html
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
pages = Pages("services.marketing")


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


def _link_not_valid() -> Response:
    """404: the problem for an API client, a page saying so for a browser."""
    if wants_html():
        return pages.render("link_invalid.html", 404)
    raise _invalid_link()


def _answer(body: dict[str, Any], template: str, **context: Any) -> Response:
    """The page for a browser, else the JSON body; neither cached nor indexed."""
    if wants_html():
        return pages.render(template, **context)
    return page_headers(jsonify(body))


def _unsubscribe_context(answer: dict[str, Any]) -> dict[str, Any]:
    # The form posts to the link itself, relative (whatever prefix a proxy serves it under),
    # without its query: `?scope=all` is no POST parameter.
    action = quote(request.path.rsplit("/", 1)[-1], safe="")
    return {"list_name": answer["list"], "all_lists": answer["all_lists"], "action": action}


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


def _claim(token: str) -> unsubscribe.UnsubscribeClaim | None:
    return unsubscribe.read_unsubscribe_token(current_settings(), token)


@unsubscribe_api.get("/unsubscribe/<token>")
def unsubscribe_link(token: str) -> Response:
    """What the link would do, and a page asking to confirm: a GET never unsubscribes."""
    everything = parse_args(scope_query).get("scope") == "all"
    claim = _claim(token)
    if claim is None:
        return _link_not_valid()
    if request.method == "HEAD":
        return Response(status=200, headers={"Cache-Control": NO_STORE})
    with current_db().session() as session:
        offer = subscriptions.link_offer(session, claim, everything=everything)
    return _answer(
        {"status": "confirm", **offer}, "unsubscribe.html", **_unsubscribe_context(offer)
    )


@unsubscribe_api.post("/unsubscribe/<token>")
def one_click_unsubscribe(token: str) -> Response:
    """RFC 8058 one-click unsubscribe (`List-Unsubscribe=One-Click`), answered 200."""
    if request.args:
        raise invalid({name: ["Unknown parameter."] for name in request.args})
    claim = _claim(token)
    if claim is None:
        return _link_not_valid()
    everything = _posted_choice().get("scope") == "all"
    origin = client_origin(subscriptions.UNSUBSCRIBE_LINK)
    with current_db().session() as session:
        answer = subscriptions.unsubscribe_by_link(session, claim, origin, everything=everything)
    return _answer(answer, "unsubscribed.html", **_unsubscribe_context(answer))


strict_query = StrictSchema()


def _confirm_claim(token: str) -> unsubscribe.ConfirmationClaim | None:
    parse_args(strict_query)
    return unsubscribe.read_confirm_token(current_settings(), token)


@unsubscribe_api.get("/subscriptions/confirm/<token>")
def confirmation_link(token: str) -> Response:
    """The list a confirmation link is for, and a page asking to confirm: a GET never
    subscribes."""
    claim = _confirm_claim(token)
    if claim is None:
        return _link_not_valid()
    if request.method == "HEAD":
        return Response(status=200, headers={"Cache-Control": NO_STORE})
    with current_db().session() as session:
        _row, sub_list = subscriptions.confirmation_offer(session, claim)
        name = sub_list.name
    action = quote(request.path.rsplit("/", 1)[-1], safe="")
    return _answer(
        {"status": "confirm", "list": name},
        "confirm_subscription.html",
        list_name=name,
        action=action,
    )


@unsubscribe_api.post("/subscriptions/confirm/<token>")
def confirm_subscription(token: str) -> Response:
    """Confirm a double opt-in subscription from the link mailed for it (the page's form)."""
    claim = _confirm_claim(token)
    if claim is None:
        return _link_not_valid()
    _posted_choice()  # an empty body, the page's form or JSON; nothing in it is needed
    with current_db().session() as session:
        _row, sub_list = subscriptions.confirm(
            session, claim, client_origin(subscriptions.DOUBLE_OPT_IN)
        )
        body = {"status": subscriptions.SUBSCRIBED, "list": sub_list.name}
    return _answer(body, "subscribed.html", list_name=body["list"])
