"""Signing in and staying signed in: access tokens, refresh tokens, logout.

Public routes (under /api/v1/auth/, exempt from the bearer check): the credentials or
the refresh token in the body are what authenticates them.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from gateway import accounts, domain, login_lockout, tokens
from gateway.api import password_hasher
from gateway.models import User
from gateway.schemas import RefreshRequestSchema, TokenRequestSchema
from shared.auth import Principal, issue_token, unauthorized
from shared.config import Settings
from shared.openapi import documented
from shared.web import current_db, current_settings, load_body, no_content

auth_api = Blueprint("gateway_auth", __name__, url_prefix="/api/v1/auth")
# Public routes get no 401 by default; these answer it for what the body presents.
REFUSED = {"responses": {"401": {"$ref": "#/components/responses/Unauthorized"}}}


def client_address() -> str:
    """The caller's address as this process sees it (set ProxyFix behind a load balancer)."""
    return request.remote_addr or "unknown"


def token_answer(settings: Settings, user: User, refresh_token: str) -> Response:
    """An access token carrying the user's current role, and the next refresh token."""
    principal = Principal(user.id, user.role, user.email, team=user.team_visibility)
    response = jsonify(
        {
            "access_token": issue_token(settings, principal),
            "token_type": "Bearer",
            "expires_in": settings.jwt_ttl_seconds,
            "refresh_token": refresh_token,
            "refresh_expires_in": settings.refresh_ttl_seconds,
        }
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
    return token_answer(settings, user, refresh_token)


refresh_request_in = RefreshRequestSchema()


@auth_api.post("/refresh")
@documented(**REFUSED)
def refresh() -> Response:
    """Trade a refresh token for a new access token and the next refresh token.

    The presented token is spent; presenting it again revokes every token of its family.
    """
    presented = load_body(refresh_request_in)["refresh_token"]
    settings = current_settings()
    with current_db().session() as session:
        outcome = tokens.rotate_refresh_token(session, settings, presented)
    # Outside the session: a refusal's revocation is committed before the 401.
    if isinstance(outcome, tokens.Refused):
        raise unauthorized(outcome.reason)
    return token_answer(settings, outcome.user, outcome.refresh_token)


@auth_api.post("/logout")
def logout() -> Response:
    """Revoke the refresh token's family and end the user's access tokens issued so far
    (204, also for a token already unknown)."""
    presented = load_body(refresh_request_in)["refresh_token"]
    with current_db().session() as session:
        user_id = tokens.revoke_family_of(session, presented)
        if user_id is not None:
            accounts.revoke_access_tokens(session, user_id)
    return no_content()
