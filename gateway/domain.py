"""The rules about users: signing in, creating, changing and removing them.

Plain functions that take a session (and the password hasher) and return records, so the
HTTP routes, the CLI and the tests all go through the same rules. Every change other
services care about records a `user.*` event in the same transaction (the outbox).
"""

from __future__ import annotations

import logging
import uuid
from functools import lru_cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway import accounts, tokens
from gateway.models import User, email_key
from shared.config import Settings, startup_problem
from shared.db import Database, take_write_lock
from shared.events import utcnow
from shared.outbox import record_event
from shared.web import ApiError, conflict, not_found

log = logging.getLogger(__name__)

BAD_CREDENTIALS = "The email or password is not correct"
# The fields of a user that other services see change (the password hash never leaves).
PUBLISHED_FIELDS = ("name", "role", "active")


@lru_cache(maxsize=8)
def _dummy_hash(hasher: PasswordHasher) -> str:
    return hasher.hash("not-a-real-password")


def _password_matches(hasher: PasswordHasher, stored_hash: str, password: str) -> bool:
    try:
        return hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def authenticate(session: Session, hasher: PasswordHasher, email: str, password: str) -> User:
    """The active user with these credentials, else 401 (one message for every failure)."""
    user = find_user_by_email(session, email)
    if user is None:
        # Hash anyway, so an unknown email takes as long as a wrong password.
        _password_matches(hasher, _dummy_hash(hasher), password)
        raise _bad_credentials()
    if not _password_matches(hasher, user.password_hash, password) or not user.active:
        raise _bad_credentials()
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    return user


def _bad_credentials() -> ApiError:
    return ApiError(401, "Unauthorized", BAD_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"})


def find_user_by_email(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(User.email_key == email_key(email))).first()


def get_user(session: Session, user_id: str) -> User:
    """The user with this id, else 404."""
    user = session.get(User, user_id)
    if user is None:
        raise not_found("User", user_id)
    return user


def _user_to_change(session: Session, user_id: str) -> User:
    """The user with this id, locked, so two concurrent changes never share a version."""
    take_write_lock(session)
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise not_found("User", user_id)
    return user


def user_event_data(user: User) -> dict[str, Any]:
    """What `user.created` / `user.updated` tell other services about a user."""
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "active": user.active,
        "version": user.version,
    }


def _record_user_event(session: Session, event_type: str, user: User, **extra: Any) -> None:
    data = {**user_event_data(user), **extra}
    record_event(session, event_type, user.id, data, aggregate_version=user.version)


def create_user(session: Session, hasher: PasswordHasher, fields: dict[str, Any]) -> User:
    """Add a user and record `user.created`; 409 if the email is taken (in any letter case)."""
    if find_user_by_email(session, fields["email"]) is not None:
        raise duplicate_email(fields["email"])
    now = utcnow()
    user = User(
        id=str(uuid.uuid4()),
        email=fields["email"].strip(),
        email_key=email_key(fields["email"]),
        name=fields.get("name", ""),
        role=fields["role"],
        active=fields.get("active", True),
        team_visibility=fields.get("team_visibility", False),
        password_hash=hasher.hash(fields["password"]),
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    session.flush()
    _record_user_event(session, "user.created", user)
    return user


def duplicate_email(email: str) -> ApiError:
    return conflict(
        f"A user with the email {email} already exists",
        {"email": ["A user with this email already exists."]},
    )


def update_user(
    session: Session, hasher: PasswordHasher, user_id: str, changes: dict[str, Any]
) -> User:
    """Change name, role, active, team visibility or password; the last active admin stays
    an active admin.

    Records `user.updated` naming the changed fields; a new password or team visibility
    alone is no event (nothing other services hold changes) and leaves the version as it is.
    A new password signs the user out everywhere (their refresh tokens are revoked); a new
    password, role or active flag ends every access token issued before.
    """
    user = _user_to_change(session, user_id)
    stays_admin = changes.get("role", user.role) == "admin" and changes.get("active", user.active)
    if user.role == "admin" and user.active and not stays_admin:
        _keep_one_admin(session, user)
    changed = [
        name
        for name in PUBLISHED_FIELDS
        if name in changes and getattr(user, name) != changes[name]
    ]
    for name in changed:
        setattr(user, name, changes[name])
    if "password" in changes:
        user.password_hash = hasher.hash(changes["password"])
        tokens.revoke_user_families(session, user.id)
    if "password" in changes or "role" in changed or "active" in changed:
        user.tokens_valid_after = accounts.revocation_time()
    if "team_visibility" in changes:
        user.team_visibility = changes["team_visibility"]
    if changed or "password" in changes or "team_visibility" in changes:
        user.updated_at = utcnow()
    if changed:
        user.version += 1
        _record_user_event(session, "user.updated", user, changed=changed)
    session.flush()
    return user


def delete_user(session: Session, user_id: str) -> None:
    """Remove a user for good and record `user.deleted`; the last active admin stays."""
    user = _user_to_change(session, user_id)
    if user.role == "admin" and user.active:
        _keep_one_admin(session, user)
    version = user.version + 1
    data = {"id": user.id, "version": version}
    record_event(session, "user.deleted", user.id, data, aggregate_version=version)
    session.delete(user)
    session.flush()


def _keep_one_admin(session: Session, user: User) -> None:
    others = session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == "admin", User.active.is_(True), User.id != user.id)
    )
    if not others:
        raise conflict("The last active admin cannot be demoted, deactivated or removed")


def bootstrap_admin(
    db: Database, settings: Settings, hasher: PasswordHasher | None = None
) -> User | None:
    """Create the admin of settings.admin_email unless a user with that email exists.

    The bootstrap admin is the one user whose password may be shorter than the minimum
    (CRM_ADMIN_PASSWORD is the operator's choice; outside development a known default is
    refused before anything starts: shared.config.startup_problem). Safe to run from several
    processes at once.
    """
    problem = startup_problem(settings, makes_admin=True)
    if problem is not None or not settings.admin_password:
        raise SystemExit(f"error: {problem or 'CRM_ADMIN_PASSWORD is not set'}")
    hasher = hasher or PasswordHasher()
    fields = {"email": settings.admin_email, "role": "admin", "password": settings.admin_password}
    try:
        with db.session() as session:
            if find_user_by_email(session, settings.admin_email) is not None:
                return None
            user = create_user(session, hasher, {**fields, "name": "Administrator"})
    except (IntegrityError, ApiError):
        return None  # another process made it first
    log.info("created the admin user %s", settings.admin_email)
    return user
