"""Access tokens outlive account changes: each call is checked against the account as it is.

An access token says who the caller was when it was issued, for up to an hour. A user
deactivated or removed since then is refused (401) at once, not when the token expires;
a user whose role or team visibility changed is treated with the current ones, and the
services are forwarded a token of the gateway's making that says so (gateway.proxy).
API keys are checked against their own table on every call already (gateway.api_keys).
"""

from __future__ import annotations

import dataclasses

from flask import Flask, g
from sqlalchemy import bindparam, select

from gateway.models import User
from shared.auth import unauthorized
from shared.db import Database

# One primary-key read on every call, so built once and run without the ORM.
_ACCOUNT = select(User.active, User.role, User.team_visibility).where(User.id == bindparam("id"))
# Set on `g` when the caller's token names a role or team visibility that changed since.
PRINCIPAL_CHANGED = "principal_changed"


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
        _active, role, team = now
        if (role, team) != (principal.role, principal.team):
            g.principal = dataclasses.replace(principal, role=role, team=team)
            setattr(g, PRINCIPAL_CHANGED, True)

    app.before_request(check)
