"""Signing in and staying signed in: access tokens, refresh tokens, logout.

Public routes (under /api/v1/auth/, exempt from the bearer check): the credentials or
the refresh token presented are what authenticates them. API clients carry the refresh
token in bodies; the web app signs in with `"session": "cookie"` and its refresh token
then lives only in an HttpOnly cookie scoped to this path, out of reach of scripts.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from gateway import accounts, domain, login_lockout, tokens
from gateway.api import password_hasher
from gateway.models import User
from gateway.schemas import RefreshRequestSchema, TokenRequestSchema
from shared.auth import Principal, forbidden, issue_token, unauthorized
from shared.config import Settings
from shared.openapi import documented
from shared.web import (
    ApiError,
    current_db,
    current_settings,
    declares_json,
    load_body,
    no_content,
)

auth_api = Blueprint("gateway_auth", __name__, url_prefix="/api/v1/auth")
# `__Host-` would demand Path=/ (sending the token with every call); `__Secure-` still has
# browsers refuse the cookie unless set over HTTPS, so a plain-HTTP origin cannot plant one.
REFRESH_COOKIE = "__Secure-crm_refresh"
REFRESH_COOKIE_PATH = auth_api.url_prefix or ""
_COOKIE_ATTRIBUTES = f"Path={REFRESH_COOKIE_PATH}; Secure; HttpOnly; SameSite=Strict"
_SET_COOKIE_DOC = {
    "Set-Cookie": {
        "description": f"Cookie mode: `{REFRESH_COOKIE}=<refresh token>; Max-Age=<refresh "
        f"ttl>; {_COOKIE_ATTRIBUTES}` (refresh rotates it; logout clears it, Max-Age=0).",
        "schema": {"type": "string"},
    }
}
_TOKEN_ANSWER_DOC = {
    "description": "An access token; in body mode also the refresh token, in cookie mode "
    "never (it is in Set-Cookie)",
    "headers": _SET_COOKIE_DOC,
    "content": {"application/json": {"schema": {"type": "object"}}},
}


def _refusals(*statuses: int) -> dict[str, Any]:
    names = {401: "Unauthorized", 403: "Forbidden", 415: "UnsupportedMediaType"}
    return {str(s): {"$ref": f"#/components/responses/{names[s]}"} for s in statuses}


# Public routes get no 401 by default; these answer it for what the request presents.
# 403: a cookie sent from a foreign Origin; 415: a cookie-mode request that is not JSON.
REFUSED = {"responses": {"200": _TOKEN_ANSWER_DOC, **_refusals(401)}}
COOKIE_REFUSED = {"responses": {"200": _TOKEN_ANSWER_DOC, **_refusals(401, 403, 415)}}
LOGOUT_REFUSED = {
    "responses": {
        "204": {"description": "Done; no content", "headers": _SET_COOKIE_DOC},
        **_refusals(401, 403, 415),
    }
}


def client_address() -> str:
    """The caller's address as this process sees it (set ProxyFix behind a load balancer)."""
    return request.remote_addr or "unknown"


def refresh_cookie(token: str, max_age: int) -> str:
    """A Set-Cookie value for the refresh cookie (an empty token and 0 clear it)."""
    return f"{REFRESH_COOKIE}={token}; Max-Age={max_age}; {_COOKIE_ATTRIBUTES}"


CLEARED_COOKIE = refresh_cookie("", 0)


def token_answer(settings: Settings, user: User, refresh_token: str, *, cookie: bool) -> Response:
    """An access token carrying the user's current role, and the next refresh token."""
    principal = Principal(user.id, user.role, user.email, team=user.team_visibility)
    body = {
        "access_token": issue_token(settings, principal),
        "token_type": "Bearer",
        "expires_in": settings.jwt_ttl_seconds,
        "refresh_expires_in": settings.refresh_ttl_seconds,
    }
    if not cookie:
        body["refresh_token"] = refresh_token
    response = jsonify(body)
    if cookie:
        response.headers.add(
            "Set-Cookie", refresh_cookie(refresh_token, settings.refresh_ttl_seconds)
        )
    response.headers["Cache-Control"] = "no-store"
    return response


token_request_in = TokenRequestSchema()


@auth_api.post("/token")
@documented(**REFUSED)
def create_token() -> Response:
    """Trade an email and password for an access token and a refresh token.

    429 with Retry-After while this email from this client, or this client on any email,
    has failed too often lately (growing waits; other clients are not held back).
    """
    credentials = load_body(token_request_in)
    email = credentials["email"]
    settings, db = current_settings(), current_db()
    with db.session() as session:
        login_lockout.record_attempt(session, email, client_address())
    with db.session() as session:
        user = domain.authenticate(session, password_hasher(), email, credentials["password"])
        login_lockout.forget_failures(session, email, client_address())
        refresh_token = tokens.start_family(session, settings, user)
    return token_answer(settings, user, refresh_token, cookie=credentials["session"] == "cookie")


refresh_request_in = RefreshRequestSchema()


def refresh_body() -> dict[str, Any]:
    """The JSON body of refresh or logout; an empty one is `{}` if declared JSON (cookie mode)."""
    if request.get_data(cache=True):
        return load_body(refresh_request_in)
    if not declares_json():  # a cross-site form cannot send JSON without a CORS preflight
        raise ApiError(415, "Unsupported Media Type", "Send Content-Type: application/json")
    return {}


def check_origin(settings: Settings) -> None:
    """403 unless a sent Origin is the gateway's own or an allowed CORS origin."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    allowed = {request.host_url.rstrip("/")}
    allowed |= {o for o in settings.extra.get("cors_origins", ()) if o != "*"}
    if origin not in allowed:
        raise forbidden("The refresh cookie is not accepted from this Origin")


def presented_refresh_token(settings: Settings) -> tuple[str, bool]:
    """The refresh token sent in the body or the cookie, and whether it came in the cookie."""
    given = refresh_body().get("refresh_token")
    cookie = request.cookies.get(REFRESH_COOKIE)
    if given is not None and cookie is not None:
        raise ApiError(400, "Bad Request", "Send the refresh token in the body or the cookie")
    if given is not None:
        return given, False
    if not cookie:
        raise unauthorized("No refresh token: send it in the body or the refresh cookie")
    check_origin(settings)
    return cookie, True


@auth_api.post("/refresh")
@documented(**COOKIE_REFUSED)
def refresh() -> Response:
    """Trade a refresh token for a new access token and the next refresh token.

    The token comes in the body, or (cookie mode, no body or `{}`) in the refresh cookie,
    which is then rotated. The presented token is spent; presenting it again revokes
    every token of its family.
    """
    settings = current_settings()
    presented, from_cookie = presented_refresh_token(settings)
    with current_db().session() as session:
        outcome = tokens.rotate_refresh_token(session, settings, presented)
    # Outside the session: a refusal's revocation is committed before the 401.
    if isinstance(outcome, tokens.Refused):
        error = unauthorized(outcome.reason)
        if from_cookie:  # a dead cookie is of no further use: the browser may drop it
            error.headers["Set-Cookie"] = CLEARED_COOKIE
        raise error
    return token_answer(settings, outcome.user, outcome.refresh_token, cookie=from_cookie)


@auth_api.post("/logout")
@documented(**LOGOUT_REFUSED)
def logout() -> Response:
    """Revoke the refresh token's family and end the user's access tokens issued so far
    (204, also for a token already unknown; cookie mode also clears the cookie)."""
    presented, from_cookie = presented_refresh_token(current_settings())
    with current_db().session() as session:
        user_id = tokens.revoke_family_of(session, presented)
        if user_id is not None:
            accounts.revoke_access_tokens(session, user_id)
    response = no_content()
    if from_cookie:
        response.headers.add("Set-Cookie", CLEARED_COOKIE)
    return response
