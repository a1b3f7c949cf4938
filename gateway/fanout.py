"""Asking several services at once for the gateway's composed views (customer, dashboard).

Each call is a GET with the caller's credentials and request id, a short timeout and the
service's circuit breaker; the calls of one view run in parallel on a small thread pool,
so the view takes about as long as its slowest service, never the sum. A call never
raises: it comes back as an Answer (ok, not found, forbidden or unavailable), and
`Sections` turns the answers into a body that names what could not be had.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from flask import Flask, current_app

from gateway.breaker import Breakers, CircuitOpen
from gateway.upstream import Upstream, UpstreamError

log = logging.getLogger(__name__)

OK, NOT_FOUND, FORBIDDEN, UNAVAILABLE = "ok", "not_found", "forbidden", "unavailable"
# Threads for the calls of every view a gateway process composes at once: made as needed,
# kept for the next view (making a dozen threads per view cost more than a call). Room for
# the eleven calls of each of several views at once (gunicorn's gthread workers), so a
# call never queues behind another view's slow ones.
POOL_THREADS = 64
FANOUT_POOL = "gateway.fanout_pool"
# How long past a call's own timeout the view still waits for its thread.
GRACE_SECONDS = 0.25


@dataclass(frozen=True)
class Call:
    """One GET to a service: its name, the path and the query parameters."""

    service: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """What came of a Call: an outcome and, when OK, the JSON body."""

    service: str
    outcome: str
    body: Any = None

    @property
    def ok(self) -> bool:
        return self.outcome == OK


@dataclass(frozen=True)
class ServiceClient:
    """GETs to the services with the caller's headers, a timeout and the breakers."""

    http: Upstream
    service_urls: Mapping[str, str]
    headers: Mapping[str, str]
    breakers: Breakers
    timeout: float

    def get(self, call: Call, timeout: float | None = None) -> Answer:
        """Send one call; never raises (a failure is an UNAVAILABLE answer)."""
        base_url = self.service_urls.get(call.service)
        if not base_url:
            log.error("no URL is configured for the %s service", call.service)
            return Answer(call.service, UNAVAILABLE)
        breaker = self.breakers[call.service]
        try:
            breaker.guard()
        except CircuitOpen:
            return Answer(call.service, UNAVAILABLE)
        seconds = timeout or self.timeout
        url = f"{base_url.rstrip('/')}{call.path}"
        if call.params:
            url = f"{url}?{urlencode(call.params)}"
        try:
            status, body = self.http.get_json(url, self.headers, seconds)
        except UpstreamError as error:
            breaker.record_failure()
            log.warning("the %s service did not answer: %s", call.service, error)
            return Answer(call.service, UNAVAILABLE)
        breaker.record_status(status)
        return _answer_of(call, status, body)


def _answer_of(call: Call, status: int, body: Any) -> Answer:
    if status == 404:
        return Answer(call.service, NOT_FOUND)
    if status == 403:
        return Answer(call.service, FORBIDDEN)
    if status != 200:
        log.warning("the %s service answered %d to GET %s", call.service, status, call.path)
        return Answer(call.service, UNAVAILABLE)
    if body is None:
        log.warning("the %s service answered GET %s with no JSON", call.service, call.path)
        return Answer(call.service, UNAVAILABLE)
    return Answer(call.service, OK, body)


class Fanout:
    """The calls of one view, run in parallel, each within its timeout.

    Use it as a context manager: on exit, calls not started yet are dropped and calls
    still running are left to finish on their own (each has a timeout); the view does
    not wait for them. The threads are the app's (`init_fanout`), shared by its views.
    """

    def __init__(self, client: ServiceClient) -> None:
        self.client = client
        self.started = time.monotonic()
        self._pool: Executor = current_app.extensions[FANOUT_POOL]
        self._deadlines: dict[Future[Answer], tuple[float, str]] = {}

    def __enter__(self) -> Fanout:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for future in self._deadlines:
            future.cancel()  # those not started yet; running ones end by their timeout

    def submit(self, call: Call, *, dependent: bool = False) -> Future[Answer]:
        """Start a call; a dependent one (it needed an earlier answer) gets what time is left.

        What is left of the view's budget (one timeout from the start), but at least half a
        timeout, so a call made late is not doomed: the whole view stays within 1.5 timeouts.
        """
        timeout = self.client.timeout
        if dependent:
            left = self.started + timeout - time.monotonic()
            timeout = max(left, timeout / 2)
        future = self._pool.submit(self.client.get, call, timeout)
        self._deadlines[future] = (time.monotonic() + timeout + GRACE_SECONDS, call.service)
        return future

    def result(self, future: Future[Answer]) -> Answer:
        """The answer of a submitted call; UNAVAILABLE if it overran its time."""
        deadline, service = self._deadlines[future]
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            log.warning("the %s service overran its time; the view goes without it", service)
        except Exception:  # a bug in building the call must not cost the whole view
            log.exception("a call to the %s service failed", service)
        return Answer(service, UNAVAILABLE)


def init_fanout(app: Flask) -> None:
    """Give the app the thread pool its views' calls run on (one per gateway process)."""
    pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="gateway-view")
    app.extensions[FANOUT_POOL] = pool


def items(body: Any) -> list[Any]:
    """The `items` of a list answer ([] for no answer or another shape)."""
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        return body["items"]
    return []


class Sections:
    """A composed body: sections from answers, and which services or sections are missing.

    A section whose answers are all there is built; one with an unavailable service is
    null and the service is named in `unavailable`; one a service refused the caller
    (403) is left out and named in `forbidden`. NOT_FOUND answers reach the builder as
    None (nothing there).
    """

    def __init__(self) -> None:
        self.body: dict[str, Any] = {}
        self.unavailable: set[str] = set()
        self.forbidden: list[str] = []

    def add(self, name: str, answers: list[Answer], build: Callable[..., Any]) -> None:
        missing = {answer.service for answer in answers if answer.outcome == UNAVAILABLE}
        if missing:
            self.unavailable |= missing
            self.body[name] = None
        elif any(answer.outcome == FORBIDDEN for answer in answers):
            self.forbidden.append(name)
        else:
            self.body[name] = build(*(answer.body for answer in answers))

    def finish(self) -> dict[str, Any]:
        return {
            **self.body,
            "unavailable": sorted(self.unavailable),
            "forbidden": self.forbidden,
        }
