"""Rate limits: requests per caller, or per client address on the public paths.

Fixed windows (a minute by default). Each request adds one to the row of its bucket and
window with a single UPSERT that returns the new count, so the counters live in the
gateway's database and every gunicorn worker and replica counts the same requests, in
one round trip. Over the limit the answer is 429 with Retry-After (seconds to the
window's end); every limited answer carries RateLimit-Limit, -Remaining and -Reset.

What is limited, and by what:
- the public paths (no token), per client address, in families: `auth` (sign-in, on top
  of the lockout of gateway.login_lockout), `forms` (lead capture, on top of sales' own
  limit), `links` (unsubscribe, opt-in confirmation and CSAT links) and `tracking`;
- every other /api/ call, per caller: the user or the API key.

If the database cannot count, the request goes through (and is logged): the limits
protect the API, they must not take it down. The gateway worker purges past windows.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request
from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.auth_api import client_address
from gateway.models import RateLimitCounter
from shared.auth import Principal
from shared.config import Settings
from shared.db import Database, make_engine
from shared.web import ApiError

log = logging.getLogger(__name__)

RATE_LIMITER = "gateway.rate_limiter"
# Public path prefix -> the family whose limit counts it, per client address.
PUBLIC_FAMILIES: tuple[tuple[str, str], ...] = (
    ("/api/v1/auth/", "auth"),
    ("/api/v1/forms/", "forms"),
    ("/api/v1/unsubscribe/", "links"),
    ("/api/v1/subscriptions/confirm/", "links"),
    ("/api/v1/csat/", "links"),
    ("/t/", "tracking"),
)
API_FAMILY = "api"
FAMILIES = ("api", "auth", "forms", "links", "tracking")
CLIENT_KEY_LENGTH = 64
# The counting engine's pool on PostgreSQL (per process): a connection per busy thread.
COUNTING_POOL_SIZE = 2
COUNTING_POOL_OVERFLOW = 8

# The clock of the windows (seconds since the epoch); tests move it.
clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class Usage:
    """A bucket's count in the current window, measured against its limit."""

    limit: int
    hits: int
    reset_seconds: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.hits)

    @property
    def exceeded(self) -> bool:
        return self.hits > self.limit

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


@dataclass(frozen=True)
class Window:
    """The fixed window a moment falls in."""

    start: int
    end: int

    @classmethod
    def at(cls, now: float, seconds: int) -> Window:
        start = int(now // seconds) * seconds
        return cls(start, start + seconds)

    def seconds_left(self, now: float) -> int:
        return max(1, math.ceil(self.end - now))


def bucket_of(path: str, principal: Principal | None) -> tuple[str, str] | None:
    """The family and the client a request counts against; None if it is not limited."""
    for prefix, family in PUBLIC_FAMILIES:
        if path.startswith(prefix):
            return family, client_address()[:CLIENT_KEY_LENGTH]
    if principal is not None and path.startswith("/api/"):
        return API_FAMILY, f"{principal.kind}:{principal.subject}"
    return None


def count_hit(engine: Engine, bucket: str, window: Window) -> int:
    """Add one to the bucket's window and return its count: one atomic UPSERT."""
    table = RateLimitCounter.__table__
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(table)
        .values(bucket=bucket, window_start=window.start, expires_at=window.end, hits=1)
        .on_conflict_do_update(
            index_elements=[table.c.bucket, table.c.window_start],
            set_={"hits": table.c.hits + 1},
        )
        .returning(table.c.hits)
    )
    with engine.connect() as connection:
        return connection.execute(statement).scalar_one()


def counting_engine(db: Database) -> Engine:
    """An engine whose every statement commits itself, without a liveness ping on checkout.

    So a count is one round trip: no BEGIN, COMMIT or SELECT 1 around the UPSERT. A dead
    connection just fails one count (let through); the pool then reconnects.
    """
    if not db.is_postgres:  # a local file: nothing to save, and no second pool
        return db.engine.execution_options(isolation_level="AUTOCOMMIT")
    return make_engine(
        db.engine.url.render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
        pool_pre_ping=False,
        pool_size=COUNTING_POOL_SIZE,
        max_overflow=COUNTING_POOL_OVERFLOW,
    )


def purge_expired(db: Database, now: float | None = None) -> int:
    """Delete the counters of windows that have ended; how many went."""
    moment = int(clock() if now is None else now)
    with db.session() as session:
        result = session.execute(
            delete(RateLimitCounter).where(RateLimitCounter.expires_at <= moment)
        )
        return result.rowcount or 0


def too_many_requests(usage: Usage) -> ApiError:
    retry_after = str(usage.reset_seconds)
    return ApiError(
        429,
        "Too Many Requests",
        f"The rate limit of {usage.limit} requests is used up; try again in {retry_after} s",
        headers={"Retry-After": retry_after},
    )


class RateLimiter:
    """The limits of one gateway app, and the counting of its requests against them."""

    def __init__(
        self,
        engine: Engine,
        window_seconds: int,
        limits: dict[str, int],
        *,
        owns_engine: bool = True,
    ) -> None:
        self.window_seconds = max(1, window_seconds)
        self.limits = dict(limits)
        self._engine = engine
        self._owns_engine = owns_engine

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> RateLimiter:
        extra = settings.extra
        limits = {family: int(extra.get(f"rate_limit_{family}", 0)) for family in FAMILIES}
        window_seconds = int(extra.get("rate_limit_window_seconds", 60))
        return cls(counting_engine(db), window_seconds, limits, owns_engine=db.is_postgres)

    def dispose(self) -> None:
        """Close the counting engine's connections (tests; a process's end does it too)."""
        if self._owns_engine:  # on SQLite it is the app's own engine: the app closes it
            self._engine.dispose()

    def check(self, family: str, client: str) -> Usage | None:
        """Count a request of `client`; its usage, or None if unlimited or not counted."""
        limit = self.limits.get(family, 0)
        if limit <= 0:
            return None
        now = clock()
        window = Window.at(now, self.window_seconds)
        try:
            hits = count_hit(self._engine, f"{family}:{client}", window)
        except SQLAlchemyError as error:
            log.warning("rate limit not checked (letting through): %s", type(error).__name__)
            return None
        return Usage(limit, hits, window.seconds_left(now))


def _limit_request() -> None:
    limiter: RateLimiter = current_app.extensions[RATE_LIMITER]
    counted = bucket_of(request.path, g.get("principal"))
    if counted is None:
        return
    usage = limiter.check(*counted)
    if usage is None:
        return
    g.rate_limit_usage = usage
    if usage.exceeded:
        raise too_many_requests(usage)


def _add_headers(response: Response) -> Response:
    usage: Usage | None = g.get("rate_limit_usage")
    if usage is not None:
        for name, value in usage.headers().items():
            response.headers[name] = value
    return response


def init_rate_limits(app: Flask, db: Database, settings: Settings) -> RateLimiter | None:
    """Limit the app's requests; call after shared.auth.protect (the API counts per caller)."""
    if not settings.extra.get("rate_limits", True):
        log.info("rate limits are off (CRM_RATE_LIMITS)")
        return None
    limiter = RateLimiter.from_settings(db, settings)
    app.extensions[RATE_LIMITER] = limiter
    app.before_request(_limit_request)
    app.after_request(_add_headers)
    return limiter
