"""Backoff of sign-ins: failures of one email from one client, and of one client on any email.

Each (email, client address) pair gets a few free failures, then every further attempt
waits a growing delay (30 s, 1 min, 2 min, ... capped at 15 min) after its last failure; so
does a client failing on many emails. Nothing is counted per email alone: an attacker failing for
admin@ from one address never locks the admin out from another (the right password from
elsewhere signs in at once).

Failures are rows in the gateway's database, so every gunicorn worker and replica counts
the same ones. An attempt is recorded as a failure *before* its password is checked and
forgotten if it succeeds: a burst of parallel guesses cannot all slip under the limit
while the slow password hash runs. Unknown emails count exactly like known ones, so the
answers never tell whether an account exists.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, select
from sqlalchemy.orm import Session

from gateway.models import LoginFailure, email_key
from shared.events import utcnow
from shared.web import ApiError

# Failures older than this count for nothing.
WINDOW = timedelta(minutes=15)
# Failures of one email from one client before each further attempt waits (typos happen).
PAIR_FREE_FAILURES = 5
# Failures of one client, whatever emails it tries, before it waits.
CLIENT_FREE_FAILURES = 20
# The first wait; each further failure doubles it, up to MAX_DELAY. Not a second or two:
# one check of a password (argon2) takes about that long, so it would hold nobody back.
FIRST_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(minutes=15)


def email_digest(email: str) -> str:
    """How an email is counted: its SHA-256, so the table keeps no addresses."""
    return hashlib.sha256(email_key(email).encode()).hexdigest()


def backoff(failures: int, free: int) -> timedelta | None:
    """How long after the last of `failures` the next attempt waits (None: not at all)."""
    if failures < free:
        return None
    doublings = min(failures - free, 20)  # 2**20 s is far past the cap already
    return min(FIRST_DELAY * 2**doublings, MAX_DELAY)


def _wait_until(
    session: Session, matches: ColumnElement[bool], free: int, now: datetime
) -> datetime | None:
    """When the next attempt matching `matches` may be tried; None if it may now."""
    failures, last = session.execute(
        select(func.count(), func.max(LoginFailure.failed_at)).where(
            matches, LoginFailure.failed_at > now - WINDOW
        )
    ).one()
    delay = backoff(failures, free)
    if delay is None or last is None:
        return None
    if last.tzinfo is None:  # SQLite's aggregate comes back naive (UTC)
        last = last.replace(tzinfo=now.tzinfo)
    return last + delay if last + delay > now else None


def too_many_attempts(retry_at: datetime, now: datetime) -> ApiError:
    seconds = max(1, math.ceil((retry_at - now).total_seconds()))
    return ApiError(
        429,
        "Too Many Requests",
        "Too many failed sign-ins; try again later",
        headers={"Retry-After": str(seconds)},
    )


def _pair(digest: str, client_address: str) -> ColumnElement[bool]:
    return and_(
        LoginFailure.email_digest == digest, LoginFailure.client_address == client_address[:64]
    )


def record_attempt(session: Session, email: str, client_address: str) -> None:
    """Count a sign-in about to be checked; 429 (with Retry-After) if it may not be tried.

    The attempt is written as a failure; `forget_failures` takes it back on success.
    A refused attempt is not written: waiting it out is all a client has to do.
    """
    now = utcnow()
    digest = email_digest(email)
    for matches, free in (
        (_pair(digest, client_address), PAIR_FREE_FAILURES),
        (LoginFailure.client_address == client_address[:64], CLIENT_FREE_FAILURES),
    ):
        retry_at = _wait_until(session, matches, free, now)
        if retry_at is not None:
            raise too_many_attempts(retry_at, now)
    # Old failures count for nothing: clear them while here (an indexed range).
    session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= now - WINDOW))
    session.add(
        LoginFailure(
            id=str(uuid.uuid4()),
            email_digest=digest,
            client_address=client_address[:64],
            failed_at=now,
        )
    )


def forget_failures(session: Session, email: str, client_address: str) -> None:
    """A successful sign-in: the email starts counting from zero again from that client
    (another client's failures for it stay: they may be an attacker's)."""
    session.execute(delete(LoginFailure).where(_pair(email_digest(email), client_address)))


def failure_count(session: Session, email: str) -> int:
    """Failures of an email within the window (for tests and operators)."""
    now = utcnow()
    return session.scalar(
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.email_digest == email_digest(email))
        .where(LoginFailure.failed_at > now - WINDOW)
    )
