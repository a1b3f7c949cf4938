"""Lockout and backoff of sign-ins: too many failures for one email, or from one client.

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

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from gateway.models import LoginFailure, email_key
from shared.events import utcnow
from shared.web import ApiError

WINDOW = timedelta(minutes=15)
# Failures within WINDOW after which an email is locked (even for the right password).
EMAIL_FAILURE_LIMIT = 5
# Failures within WINDOW after which a client is held back, whatever emails it tries.
CLIENT_FAILURE_LIMIT = 20


def email_digest(email: str) -> str:
    """How an email is counted: its SHA-256, so the table keeps no addresses."""
    return hashlib.sha256(email_key(email).encode()).hexdigest()


def _retry_at(
    session: Session, matches: ColumnElement[bool], limit: int, now: datetime
) -> datetime | None:
    """When the failures matching `matches` drop under `limit`; None if they already are."""
    recent = (
        select(LoginFailure.failed_at)
        .where(matches, LoginFailure.failed_at > now - WINDOW)
        .order_by(LoginFailure.failed_at.desc())
        .offset(limit - 1)
        .limit(1)
    )
    oldest_that_counts = session.scalar(recent)
    return None if oldest_that_counts is None else oldest_that_counts + WINDOW


def too_many_attempts(retry_at: datetime, now: datetime) -> ApiError:
    seconds = max(1, math.ceil((retry_at - now).total_seconds()))
    return ApiError(
        429,
        "Too Many Requests",
        "Too many failed sign-ins; try again later",
        headers={"Retry-After": str(seconds)},
    )


def record_attempt(session: Session, email: str, client_address: str) -> None:
    """Count a sign-in about to be checked; 429 (with Retry-After) if it may not be tried.

    The attempt is written as a failure; `forget_failures` takes it back on success.
    """
    now = utcnow()
    digest = email_digest(email)
    for matches, limit in (
        (LoginFailure.email_digest == digest, EMAIL_FAILURE_LIMIT),
        (LoginFailure.client_address == client_address, CLIENT_FAILURE_LIMIT),
    ):
        retry_at = _retry_at(session, matches, limit, now)
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


def forget_failures(session: Session, email: str) -> None:
    """A successful sign-in: the email starts counting from zero again."""
    session.execute(delete(LoginFailure).where(LoginFailure.email_digest == email_digest(email)))


def failure_count(session: Session, email: str) -> int:
    """Failures of an email within the window (for tests and operators)."""
    now = utcnow()
    return session.scalar(
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.email_digest == email_digest(email))
        .where(LoginFailure.failed_at > now - WINDOW)
    )
