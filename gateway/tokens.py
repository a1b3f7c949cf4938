"""Refresh tokens: opaque, single use, rotated on every refresh, revoked a family at a time.

A sign-in starts a family; each refresh spends the token it presents and hands out the
next one of the same family. A spent token presented again means two parties hold the
chain (one of them a thief): the whole family is revoked and both must sign in again.
Only the SHA-256 of a token is stored: 256 random bits need no slow password hash.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.orm import Session

from gateway.models import RefreshToken, RefreshTokenFamily, User
from shared.config import Settings
from shared.db import take_write_lock
from shared.events import utcnow

log = logging.getLogger(__name__)

TOKEN_BYTES = 32


@dataclass(frozen=True)
class Rotated:
    """A refresh that worked: the user (as they are now) and their next refresh token."""

    user: User
    refresh_token: str


@dataclass(frozen=True)
class Refused:
    """A refresh that did not work, and why (the answer is a 401 either way)."""

    reason: str


def token_digest(token: str) -> str:
    """What is stored of a refresh token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _add_token(session: Session, family_id: str, ttl_seconds: int, now: datetime) -> str:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    session.add(
        RefreshToken(
            id=str(uuid.uuid4()),
            family_id=family_id,
            token_hash=token_digest(token),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
    )
    session.flush()
    return token


def start_family(session: Session, settings: Settings, user: User) -> str:
    """A new family for a fresh sign-in; returns its first refresh token.

    Also forgets the user's families that can no longer refresh (revoked or expired),
    so the table holds about one family per live session.
    """
    now = utcnow()
    _forget_dead_families(session, user.id, now)
    family = RefreshTokenFamily(id=str(uuid.uuid4()), user_id=user.id, created_at=now)
    session.add(family)
    session.flush()
    return _add_token(session, family.id, settings.refresh_ttl_seconds, now)


def _forget_dead_families(session: Session, user_id: str, now: datetime) -> None:
    live_token = exists().where(
        RefreshToken.family_id == RefreshTokenFamily.id, RefreshToken.expires_at > now
    )
    session.execute(
        delete(RefreshTokenFamily)
        .where(RefreshTokenFamily.user_id == user_id)
        .where(or_(RefreshTokenFamily.revoked_at.is_not(None), ~live_token))
        .execution_options(synchronize_session=False)
    )


def _locked_token(session: Session, presented: str) -> RefreshToken | None:
    take_write_lock(session)
    statement = select(RefreshToken).where(RefreshToken.token_hash == token_digest(presented))
    return session.scalars(statement.with_for_update()).first()


def rotate_refresh_token(session: Session, settings: Settings, presented: str) -> Rotated | Refused:
    """Spend a refresh token for the next one of its family, or say why not.

    A refusal may still have changed something that must be kept (a family revoked after
    reuse), so it is returned rather than raised: the caller commits, then answers 401.
    """
    now = utcnow()
    token = _locked_token(session, presented)
    if token is None:
        return Refused("The refresh token is not valid")
    family = session.get(RefreshTokenFamily, token.family_id, with_for_update=True)
    if family is None or family.revoked_at is not None:
        return Refused("The refresh token has been revoked; sign in again")
    if token.used_at is not None:
        family.revoked_at = now
        log.warning("a spent refresh token came back: family %s revoked", family.id)
        return Refused("The refresh token was already used; sign in again")
    if token.expires_at <= now:
        return Refused("The refresh token has expired; sign in again")
    user = session.get(User, family.user_id)
    if user is None or not user.active:
        family.revoked_at = now
        return Refused("The account of this refresh token is no longer active")
    token.used_at = now
    # Spent tokens are kept until they expire (to catch reuse); after that they can go.
    session.execute(
        delete(RefreshToken)
        .where(RefreshToken.family_id == family.id, RefreshToken.expires_at <= now)
        .execution_options(synchronize_session=False)
    )
    return Rotated(user, _add_token(session, family.id, settings.refresh_ttl_seconds, now))


def revoke_user_families(session: Session, user_id: str) -> None:
    """Sign a user out everywhere (a new password): every live family is revoked."""
    session.execute(
        update(RefreshTokenFamily)
        .where(RefreshTokenFamily.user_id == user_id, RefreshTokenFamily.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def revoke_family_of(session: Session, presented: str) -> str | None:
    """Log out: revoke the family of a refresh token; the user's id (None if unknown)."""
    token = _locked_token(session, presented)
    if token is None:
        return None
    family = session.get(RefreshTokenFamily, token.family_id, with_for_update=True)
    if family is None:
        return None
    if family.revoked_at is None:
        family.revoked_at = utcnow()
    return family.user_id
