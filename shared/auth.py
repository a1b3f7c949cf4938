"""Bearer tokens: access tokens the gateway issues to clients, and service-call tokens it
forwards to the services; each kind signed with its own key (shared.keys).

A client's access token (ACCESS_TOKEN key, kind "user" only) is verified at the gateway
alone. The gateway checks the account behind it, then forwards each call with a
service-call token of its own making (SERVICE_CALL key, a minute at most) naming the
current role and team: a service verifies only those, so a client's token sent around the
gateway opens nothing there.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from flask import Flask, g, request

from shared.config import Settings
from shared.keys import ACCESS_TOKEN, SERVICE_CALL, purpose_key
from shared.web import ApiError

ROLES = ("admin", "sales", "support", "marketing", "viewer")
ALGORITHM = "HS256"
ISSUER = "crm-gateway"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POSTs that only read (a search's filters don't fit a query string): viewers may send them.
READ_ONLY_POST_SUFFIXES = ("/search", "/batch/read")
# The header integrations send their API key in; only the gateway reads it.
API_KEY_HEADER = "X-API-Key"
# How long a token the gateway forwards to a service lives.
SERVICE_TOKEN_TTL_SECONDS = 60
# The kinds of caller each kind of token may name: an access token names a user only (an
# API key is checked on every call by the gateway, which forwards it with a service-call
# token); a service-call token also a key or a service calling another (kind "service").
KINDS = {
    ACCESS_TOKEN: frozenset({"user"}),
    SERVICE_CALL: frozenset({"user", "api_key", "service"}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user or an API key, with one role."""

    subject: str
    role: str
    email: str | None = None
    kind: str = "user"
    # Granted by an admin: sees the team's records where the role otherwise sees only its own.
    team: bool = False
    # When the token was issued (seconds since the epoch, to the millisecond): the gateway
    # refuses tokens issued before the account's `tokens_valid_after`.
    issued_at: float = field(default=0.0, compare=False)

    @property
    def may_write(self) -> bool:
        return self.role != "viewer"


def signing_key(settings: Settings, purpose: str) -> bytes:
    """The key of one purpose under the configured secret; never one from an empty secret."""
    if not settings.jwt_secret:
        raise RuntimeError("CRM_JWT_SECRET is not set")
    return purpose_key(settings.jwt_secret, purpose)


def issue_token(
    settings: Settings,
    principal: Principal,
    ttl_seconds: int | None = None,
    *,
    purpose: str = ACCESS_TOKEN,
) -> str:
    """A signed, short-lived token for a principal: a client's access token by default."""
    if principal.kind not in KINDS[purpose]:
        raise ValueError(f"a {purpose} token cannot name a {principal.kind!r}")
    now = time.time()
    claims = {
        "iss": ISSUER,
        "sub": principal.subject,
        "role": principal.role,
        "email": principal.email,
        "kind": principal.kind,
        "team": principal.team,
        # To the millisecond: a token issued just after a logout must not look older than it.
        "iat": math.floor(now * 1000) / 1000,
        "exp": int(now) + (ttl_seconds or settings.jwt_ttl_seconds),
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, signing_key(settings, purpose), algorithm=ALGORITHM)


def issue_service_token(
    settings: Settings, principal: Principal, ttl_seconds: int = SERVICE_TOKEN_TTL_SECONDS
) -> str:
    """The token a service accepts: what the gateway forwards (and a service calling another)."""
    return issue_token(settings, principal, ttl_seconds, purpose=SERVICE_CALL)


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> ApiError:
    return ApiError(403, "Forbidden", detail)


class VerifiedTokens:
    """Tokens this process has verified, with their principal, kept until they expire.

    A client sends the same token with every call for minutes; checking its signature and
    claims again each time cost more than the rest of a simple read. A token is immutable,
    so once verified under a key it stays valid until its `exp`: a hit only compares the
    clock (revocation is the gateway's account check, after this). Bounded: when full, the
    oldest entry makes room. Only verified tokens are kept, never a refused one.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._entries: dict[tuple[str | bytes, str], tuple[Principal, int]] = {}

    def get(self, secret: str | bytes, token: str) -> Principal | None:
        entry = self._entries.get((secret, token))
        if entry is None:
            return None
        principal, expires = entry
        if time.time() >= expires:
            self._entries.pop((secret, token), None)
            return None  # verified again, which answers 401 "expired"
        return principal

    def put(self, secret: str | bytes, token: str, principal: Principal, expires: int) -> None:
        while len(self._entries) >= self.capacity:
            try:
                del self._entries[next(iter(self._entries))]
            except (StopIteration, KeyError, RuntimeError):  # another thread got there first
                break
        self._entries[(secret, token)] = (principal, expires)


_VERIFIED = VerifiedTokens()


def verify_token(settings: Settings, token: str, purpose: str) -> Principal:
    """The principal a token of `purpose` names, or 401 if it is expired, tampered, of
    another purpose or kind, or not ours."""
    key = signing_key(settings, purpose)
    known = _VERIFIED.get(key, token)
    if known is not None:
        return known
    principal, expires = _checked_claims(key, token, purpose)
    _VERIFIED.put(key, token, principal, expires)
    return principal


def _checked_claims(key: bytes, token: str, purpose: str) -> tuple[Principal, int]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise unauthorized("The access token has expired") from None
    except jwt.InvalidTokenError:
        raise unauthorized("The access token is not valid") from None
    role = claims.get("role")
    if role not in ROLES:
        raise unauthorized("The access token names no known role")
    kind = claims.get("kind")
    if kind not in KINDS[purpose]:
        raise unauthorized("The token is not of a kind accepted here")
    team = claims.get("team") is True
    issued_at = float(claims["iat"])
    principal = Principal(claims["sub"], role, claims.get("email"), kind, team, issued_at)
    return principal, int(claims["exp"])


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def current_principal() -> Principal:
    principal = g.get("principal")
    if principal is None:
        raise unauthorized("Authentication is required")
    return principal


def require_role(*roles: str) -> Principal:
    """The caller, if their role is one of `roles` (admin always is); else 403."""
    principal = current_principal()
    if principal.role != "admin" and principal.role not in roles:
        raise forbidden(f"The role {principal.role!r} may not do this")
    return principal


def protect(
    app: Flask,
    settings: Settings,
    *,
    purpose: str = SERVICE_CALL,
    public_prefixes: tuple[str, ...] = (),
    api_keys: Callable[[str], Principal] | None = None,
) -> None:
    """Refuse every /api/ request without a valid bearer token; viewers may only read.

    `purpose`: the tokens accepted, service-call tokens for a service and clients' access
    tokens for the gateway. `api_keys` turns an `X-API-Key` into its principal (or raises
    401). Only the gateway passes it: it forwards a key's calls with a service-call token,
    so the services accept those alone and a key sent around the gateway opens nothing.
    """

    def caller() -> Principal:
        token = bearer_token()
        if token is not None:
            return verify_token(settings, token, purpose)
        api_key = request.headers.get(API_KEY_HEADER, "").strip()
        if api_key and api_keys is not None:
            return api_keys(api_key)
        raise unauthorized("Authentication is required: send Authorization: Bearer <token>")

    def authenticate() -> None:
        path = request.path
        if not path.startswith("/api/") or path.startswith(public_prefixes):
            return
        principal = caller()
        reads = request.method in READ_METHODS or (
            request.method == "POST" and path.rstrip("/").endswith(READ_ONLY_POST_SUFFIXES)
        )
        if not reads and not principal.may_write:
            raise forbidden("The viewer role is read only")
        g.principal = principal

    app.before_request(authenticate)
