"""What the gateway stores: users, refresh tokens, API keys, failed sign-ins, rate counters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, false
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from shared.events import utcnow


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """The gateway's tables."""


class User(Base):
    """A person who signs in to the CRM, with one role."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    # The lower-cased email: makes uniqueness case-insensitive on SQLite and PostgreSQL alike.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Granted by an admin: a sales user then sees the team's leads, deals and tasks, not
    # only their own (the access token's `team` claim; the services apply it).
    team_visibility: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    password_hash: Mapped[str] = mapped_column(String(255))
    # Access tokens issued before this are refused (set by logout, a new password, a role
    # change, deactivation); None: every unexpired token counts.
    tokens_valid_after: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Counts the changes other services learn of (user.* events carry it as aggregate_version).
    version: Mapped[int] = mapped_column(default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


def email_key(email: str) -> str:
    """The form of an email that uniqueness and sign-in compare."""
    return email.strip().lower()


class RefreshTokenFamily(Base):
    """The chain of refresh tokens one sign-in starts: logout or theft revokes it whole."""

    __tablename__ = "refresh_token_families"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class RefreshToken(Base):
    """One refresh token of a family, kept as its SHA-256 only; spent once used."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    family_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("refresh_token_families.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApiKey(Base):
    """A key an integration calls with (`X-API-Key`), with one role; kept as a hash."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    # The public start of the key, to find its row; the secret after it is only hashed.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    # The admin who made it; no foreign key, so the record outlives a removed admin.
    created_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Updated at most once a minute, so using a key is no write per request.
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class LoginFailure(Base):
    """A failed sign-in (or one still being checked), counted per email and per client."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_email", "email_digest", "failed_at"),
        Index("ix_login_failures_client", "client_address", "failed_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # SHA-256 of the lower-cased email: counts attempts without keeping the address.
    email_digest: Mapped[str] = mapped_column(String(64))
    client_address: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class RateLimitCounter(Base):
    """The requests of one client in one fixed window of a rate limit (gateway.rate_limits)."""

    __tablename__ = "rate_limit_counters"

    # The limit's family and the client: "auth:203.0.113.9", "api:api_key:<id>".
    bucket: Mapped[str] = mapped_column(String(120), primary_key=True)
    # The window's start and end, in whole seconds since the epoch.
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    hits: Mapped[int] = mapped_column(Integer)
