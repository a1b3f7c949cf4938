"""Access tokens end when the account changes: each call is checked against the account.

An access token says who the caller was when it was issued, for up to 15 minutes. A user
removed or deactivated since is refused (401) at once, and so is every token issued
before the account's `tokens_valid_after` (logout, a new password, a role change,
deactivation: `revoke_access_tokens`). A user whose team visibility changed is treated with
the current one; the services are forwarded a token of the gateway's making that says so
(gateway.proxy). API keys are checked against their own table on every call
(gateway.api_keys).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime

from flask import Flask, g
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from gateway.models import User
from shared.auth import unauthorized
from shared.db import Database
from shared.events import utcnow

# One primary-key read on every call, so built once and run without the ORM.
_ACCOUNT = select(User.active, User.role, User.team_visibility, User.tokens_valid_after).where(
    User.id == bindparam("id")
)


def revocation_time() -> datetime:
    """Now, to the millisecond as access tokens' `iat` is: a token issued at this very
    millisecond still counts, one issued a millisecond later always does."""
    now = utcnow()
    return now.replace(microsecond=math.floor(now.microsecond / 1000) * 1000)


def revoke_access_tokens(session: Session, user_id: str) -> None:
    """End every access token the user holds now (they sign in or refresh for a new one)."""
    session.execute(
        update(User)
        .where(User.id == user_id)
        .values(tokens_valid_after=revocation_time())
        .execution_options(synchronize_session=False)
    )


def _revoked(issued_at: float, valid_after: datetime | None) -> bool:
    if valid_after is None:
        return False
    if valid_after.tzinfo is None:  # SQLite through Core hands back naive UTC
        valid_after = valid_after.replace(tzinfo=UTC)
    return issued_at < valid_after.timestamp()


def init_account_check(app: Flask, db: Database) -> None:
    """Check a user's token against their account; registered right after authentication."""

    def check() -> None:
        principal = g.get("principal")
        if principal is None or principal.kind != "user":
            return
        with db.engine.connect() as connection:
            now = connection.execute(_ACCOUNT, {"id": principal.subject}).first()
        if now is None or not now[0]:
            raise unauthorized("The account of this access token is no longer active")
        _active, role, team, valid_after = now
        if _revoked(principal.issued_at, valid_after):
            raise unauthorized("The access token was revoked; sign in again")
        if (role, team) != (principal.role, principal.team):
            g.principal = dataclasses.replace(principal, role=role, team=team)

    app.before_request(check)
