"""Access tokens: issued by the gateway, verified by the gateway and by every service."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from flask import Flask, g, request

from shared.config import Settings
from shared.web import ApiError

ROLES = ("admin", "sales", "support", "marketing", "viewer")
ALGORITHM = "HS256"
ISSUER = "crm-gateway"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POSTs that only read (a search's filters don't fit a query string): viewers may send them.
READ_ONLY_POST_SUFFIXES = ("/search", "/batch/read")
# The header integrations send their API key in; only the gateway reads it.
API_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user or an API key, with one role."""

    subject: str
    role: str
    email: str | None = None
    kind: str = "user"
    # Granted by an admin: sees the team's records where the role otherwise sees only its own.
    team: bool = False

    @property
    def may_write(self) -> bool:
        return self.role != "viewer"


def issue_token(settings: Settings, principal: Principal, ttl_seconds: int | None = None) -> str:
    """A signed, short-lived access token for a principal."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": principal.subject,
        "role": principal.role,
        "email": principal.email,
        "kind": principal.kind,
        "team": principal.team,
        "iat": now,
        "exp": now + (ttl_seconds or settings.jwt_ttl_seconds),
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> ApiError:
    return ApiError(403, "Forbidden", detail)


class VerifiedTokens:
    """Tokens this process has verified, with their principal, kept until they expire.

    A client sends the same token with every call for up to an hour; checking its
    signature and claims again each time cost more than the rest of a simple read. A token
    is immutable, so once verified under a secret it stays valid until its `exp`: a hit
    only compares the clock. Bounded: when full, the oldest entry makes room.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._entries: dict[tuple[str, str], tuple[Principal, int]] = {}

    def get(self, secret: str, token: str) -> Principal | None:
        entry = self._entries.get((secret, token))
        if entry is None:
            return None
        principal, expires = entry
        if time.time() >= expires:
            self._entries.pop((secret, token), None)
            return None  # verified again, which answers 401 "expired"
        return principal

    def put(self, secret: str, token: str, principal: Principal, expires: int) -> None:
        while len(self._entries) >= self.capacity:
            try:
                del self._entries[next(iter(self._entries))]
            except (StopIteration, KeyError, RuntimeError):  # another thread got there first
                break
        self._entries[(secret, token)] = (principal, expires)


_VERIFIED = VerifiedTokens()


def verify_token(settings: Settings, token: str) -> Principal:
    """The principal a token names, or 401 if it is expired, tampered or not ours."""
    known = _VERIFIED.get(settings.jwt_secret, token)
    if known is not None:
        return known
    principal, expires = _checked_claims(settings, token)
    _VERIFIED.put(settings.jwt_secret, token, principal, expires)
    return principal


def _checked_claims(settings: Settings, token: str) -> tuple[Principal, int]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.jwt_secret,
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
    team = claims.get("team") is True
    kind = claims.get("kind", "user")
    principal = Principal(claims["sub"], role, claims.get("email"), kind, team)
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
    public_prefixes: tuple[str, ...] = (),
    api_keys: Callable[[str], Principal] | None = None,
) -> None:
    """Refuse every /api/ request without a valid bearer token; viewers may only read.

    `api_keys` turns an `X-API-Key` into its principal (or raises 401). Only the gateway
    passes it: it forwards a key's calls with a bearer token of its own making, so the
    services accept bearer tokens alone and a key sent around the gateway opens nothing.
    """

    def caller() -> Principal:
        token = bearer_token()
        if token is not None:
            return verify_token(settings, token)
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
