"""`/health`, `/ready` and `/metrics` of every api process.

`/health` is trivial and public: the process answers. `/ready` (dependencies) and
`/metrics` (Prometheus) may be kept to an internal listener: the gateway, the one public
process, answers them only on the connections of its CRM_INTERNAL_BIND address, and 404
on its public port, so strangers can neither read its figures nor make it open
connections to its database and broker at will. Behind the gateway, the services answer
them on their one port (not public).

`/ready` is cheap however often it is asked: one probe at a time runs the checks, each
bounded in time, and the answer is kept a couple of seconds for the probes after it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from werkzeug.exceptions import NotFound

from shared.config import Settings
from shared.db import Database
from shared.metrics import BacklogCollector
from shared.web import problem

log = logging.getLogger(__name__)

# A readiness answer is kept this long: probes of every replica's kubelet, the load
# balancer and people refreshing a dashboard cost one round of checks per period.
READY_CACHE_SECONDS = 2.0
# The longest a probe waits for the checks (Kubernetes' probe timeout is 3 s): a check
# still running then counts as unavailable.
READY_TIMEOUT_SECONDS = 2.0
BROKER_TIMEOUT_SECONDS = 1.0
UNAVAILABLE = "unavailable"


def broker_reachable(amqp_url: str, timeout: float = BROKER_TIMEOUT_SECONDS) -> None:
    """Raise unless a TCP connection to the broker opens within `timeout` seconds."""
    parts = urlsplit(amqp_url)
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout):
        pass


def _outcome(name: str, check: Callable[[], None]) -> str:
    try:
        check()
        return "ok"
    except Exception as error:  # a readiness probe reports, it does not raise
        log.warning("readiness check %s failed: %s", name, type(error).__name__)
        return UNAVAILABLE


class Readiness:
    """The checks of `/ready`, run by one caller at a time, their answer kept `ttl` s.

    Each check runs on a thread of its own and is waited for `timeout` s at most: a
    database that takes no connection (libpq waits up to its connect_timeout) makes a
    slow "unavailable", never a probe that hangs.
    """

    def __init__(
        self,
        checks: Mapping[str, Callable[[], None]],
        *,
        ttl: float = READY_CACHE_SECONDS,
        timeout: float = READY_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checks = dict(checks)
        self._ttl, self._timeout, self._clock = ttl, timeout, clock
        self._lock = threading.Lock()
        self._answer: dict[str, str] | None = None
        self._expires = 0.0

    def results(self) -> dict[str, str]:
        """Each check's "ok" or "unavailable", at most `ttl` seconds old."""
        with self._lock:  # callers arriving mid-run wait for it rather than run it again
            if self._answer is None or self._clock() >= self._expires:
                self._answer = self._run()
                self._expires = self._clock() + self._ttl
            return dict(self._answer)

    def _run(self) -> dict[str, str]:
        found: dict[str, str] = {}
        threads = [
            threading.Thread(
                target=lambda name=name, check=check: found.update({name: _outcome(name, check)}),
                name=f"ready-{name}",
                daemon=True,  # a hung check never holds the process's exit
            )
            for name, check in self._checks.items()
        ]
        deadline = time.monotonic() + self._timeout
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        late = [name for name in self._checks if name not in found]
        if late:
            log.warning("readiness checks timed out: %s", ", ".join(late))
        return {name: found.get(name, UNAVAILABLE) for name in self._checks}


def listener_port(bind: str) -> int:
    """The port of a gunicorn `--bind` address such as `127.0.0.1:8100` or `[::]:8100`."""
    return int(bind.rsplit(":", 1)[1])


def arrival_port() -> int | None:
    """The local port the request's connection came in on (None: a unix socket).

    Read from the connection's socket where the server hands it over (gunicorn, werkzeug):
    gunicorn takes SERVER_PORT from the Host header on a unix socket. Else SERVER_PORT.
    """
    wsgi_environ = request.environ  # the request's WSGI keys, not the process environment
    connection = wsgi_environ.get("gunicorn.socket") or wsgi_environ.get("werkzeug.socket")
    if connection is not None:
        local = connection.getsockname()
        return local[1] if isinstance(local, tuple) else None
    server = request.server
    return server[1] if server else None


def ops_blueprint(
    settings: Settings,
    db: Database | None,
    dead_letters: bool,
    internal_port: int | None = None,
) -> Blueprint:
    """/health, /ready and /metrics; the last two only on `internal_port` if one is given."""
    ops = Blueprint("ops", __name__)
    checks: dict[str, Callable[[], None]] = {"broker": lambda: broker_reachable(settings.amqp_url)}
    if db is not None:
        checks["database"] = db.ping
    readiness = Readiness(checks)

    def internal_only() -> None:
        if internal_port is not None and arrival_port() != internal_port:
            raise NotFound()

    @ops.get("/health")
    def health() -> Response:
        return jsonify({"status": "ok", "service": settings.service})

    @ops.get("/ready")
    def ready() -> Response:
        """Ready when the database answers; the broker too if CRM_READY_REQUIRES_BROKER.

        An api process only writes its outbox: with RabbitMQ down it still accepts
        writes (their events wait), so by default a broker outage is reported and does
        not take it out of service. Not ready: a 503 problem naming what is down.
        """
        internal_only()
        results = readiness.results()
        required = ["database"]
        if settings.extra.get("ready_requires_broker"):
            required.append("broker")
        down = [name for name in required if results.get(name, "ok") != "ok"]
        if not down:
            return jsonify({"status": "ready", "checks": results})
        detail = f"Unavailable: {', '.join(down)}"
        return problem(503, "Service Unavailable", detail, extensions={"checks": results})

    backlog = CollectorRegistry()  # gauges read at scrape time, once per process
    backlog.register(BacklogCollector(settings, db, dead_letters=dead_letters))

    @ops.get("/metrics")
    def metrics() -> Response:
        internal_only()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # several gunicorn workers: sum them
            counters = CollectorRegistry()
            multiprocess.MultiProcessCollector(counters)
            text = generate_latest(counters)
        else:
            text = generate_latest()
        return Response(text + generate_latest(backlog), mimetype=CONTENT_TYPE_LATEST)

    return ops
