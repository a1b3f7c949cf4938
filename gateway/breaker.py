"""Circuit breakers: stop calling a service that keeps failing, for a while.

After `failures` failures in a row (connection refused, timeout, a 5xx answer) the
breaker of that service opens: for `open_seconds` every call fails fast, without a
request, so the gateway answers 503 at once instead of tying up a worker thread per
caller while the service is down. Then the breaker is half-open: one trial call goes
through; its success closes the breaker, its failure opens it for another period.

The state is per process: each gunicorn worker has its own breakers and learns on its
own that a service is down (at most `failures` calls each). That is the usual design
and needs no shared store; the cost is a few more failed calls when many workers run.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from flask import Flask, current_app

from shared.config import Settings
from shared.web import ApiError

log = logging.getLogger(__name__)

BREAKERS = "gateway.breakers"
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitOpen(ApiError):
    """A call refused because the service's breaker is open: a 503 with Retry-After."""

    def __init__(self, service: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            503,
            "Service Unavailable",
            f"The {service} service is unavailable",
            headers={"Retry-After": str(seconds)},
        )
        self.service = service
        self.retry_after = seconds


class CircuitBreaker:
    """The breaker of one service; thread-safe (a worker's threads share it)."""

    def __init__(
        self,
        service: str,
        failures: int = 5,
        open_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.failure_threshold = max(1, failures)
        self.open_seconds = open_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_started_at = 0.0

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures

    def guard(self) -> None:
        """Let a call through, or raise CircuitOpen while the breaker is open.

        When the open period is over, exactly one caller goes through as the trial; the
        others still fail fast until it reports. A trial that never reports (its thread
        died) is given up after another open period, and a new trial goes.
        """
        with self._lock:
            now = self._clock()
            if self._state == CLOSED:
                return
            if self._state == OPEN:
                waited = now - self._opened_at
                if waited < self.open_seconds:
                    raise CircuitOpen(self.service, self.open_seconds - waited)
                self._state = HALF_OPEN
                self._trial_started_at = now
                log.info("the %s circuit is half-open: trying one call", self.service)
                return
            trial_age = now - self._trial_started_at
            if trial_age < self.open_seconds:
                raise CircuitOpen(self.service, self.open_seconds - trial_age)
            self._trial_started_at = now

    def record_success(self) -> None:
        """The service answered (any status below 500): it is up."""
        with self._lock:
            if self._state != CLOSED:
                log.info("the %s circuit is closed again", self.service)
            self._state = CLOSED
            self._failures = 0

    def record_failure(self) -> None:
        """The service failed (refused, timed out, 5xx); open after enough in a row."""
        with self._lock:
            self._failures += 1
            if self._state == OPEN:  # a call made before it opened: the period stands
                return
            if self._state == HALF_OPEN or self._failures >= self.failure_threshold:
                log.warning(
                    "the %s circuit opens for %.0f s after %d failures in a row",
                    self.service,
                    self.open_seconds,
                    self._failures,
                )
                self._state = OPEN
                self._opened_at = self._clock()

    def record_status(self, status: int) -> None:
        """Record an answer by its HTTP status: 5xx is a failure, anything else a success."""
        if status >= 500:
            self.record_failure()
        else:
            self.record_success()


class Breakers:
    """One CircuitBreaker per service, made on first use."""

    def __init__(
        self,
        failures: int = 5,
        open_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failures = failures
        self._open_seconds = open_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def __getitem__(self, service: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(service)
            if breaker is None:
                breaker = CircuitBreaker(service, self._failures, self._open_seconds, self._clock)
                self._breakers[service] = breaker
            return breaker


def init_breakers(app: Flask, settings: Settings) -> Breakers:
    """Give the app its breakers (per process: see the module's docstring)."""
    breakers = Breakers(settings.breaker_failures, settings.breaker_open_seconds)
    app.extensions[BREAKERS] = breakers
    return breakers


def breaker_for(service: str) -> CircuitBreaker:
    """The current app's breaker of `service`."""
    return current_app.extensions[BREAKERS][service]
