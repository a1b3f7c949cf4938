"""Prometheus metrics of every service: counters, scrape-time gauges, the worker's endpoint.

Counters move where things happen (the api's HTTP requests, the relay's confirmed
publishes, the consumer's outcomes, the sender's emails). Gauges of state held
elsewhere (outbox backlog, dead letters waiting) are read when Prometheus scrapes,
by `BacklogCollector`, never by a background loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pika
from prometheus_client import Counter, Histogram, start_http_server, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.orm import Session

from shared import outbox
from shared.config import SERVICE_PORTS, Settings
from shared.db import Database

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "crm_http_requests_total", "HTTP requests answered", ["service", "method", "endpoint", "status"]
)
HTTP_LATENCY = Histogram(
    "crm_http_request_duration_seconds", "HTTP request latency", ["service", "method", "endpoint"]
)
EVENTS_PUBLISHED = Counter(
    "crm_events_published_total", "Events the broker confirmed (outbox relay)", ["service", "type"]
)
EVENTS_CONSUMED = Counter(
    "crm_events_consumed_total",
    "Events the consumer finished with, by outcome",
    ["service", "type", "outcome"],
)
EMAILS = Counter("crm_emails_total", "Emails by final outcome", ["service", "outcome"])
SCRAPE_ERRORS = Counter(
    "crm_metrics_scrape_errors_total", "Scrape-time gauges that could not be read", ["check"]
)

DLQ_CACHE_SECONDS = 5.0
DLQ_TIMEOUT_SECONDS = 1.0


def count_on_commit(session: Session, counter: Any, amount: float = 1, **labels: str) -> None:
    """Add to a counter once the session's transaction commits (a rollback counts nothing)."""
    if amount:
        event.listen(
            session, "after_commit", lambda _s: counter.labels(**labels).inc(amount), once=True
        )


def dead_letter_depth(settings: Settings, timeout: float = DLQ_TIMEOUT_SECONDS) -> int:
    """Messages waiting in the service's DLQ: a passive declare on a short-lived connection."""
    params = pika.URLParameters(settings.amqp_url)
    params.socket_timeout = params.blocked_connection_timeout = params.stack_timeout = timeout
    params.connection_attempts, params.retry_delay = 1, 0
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        frame = channel.queue_declare(settings.dead_letter_queue, passive=True)
        return int(frame.method.message_count)
    finally:
        if connection.is_open:
            connection.close()


class BacklogCollector(Collector):
    """Outbox backlog and age (from the database) and DLQ depth (cached), read at scrape."""

    def __init__(
        self,
        settings: Settings,
        db: Database | None,
        *,
        dead_letters: bool = True,
        dlq_cache_seconds: float = DLQ_CACHE_SECONDS,
    ) -> None:
        self.settings, self.db, self.dead_letters = settings, db, dead_letters
        self.dlq_cache_seconds = dlq_cache_seconds
        self._dlq: tuple[float, int | None] = (float("-inf"), None)
        self._lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        service = self.settings.service
        if self.db is not None:
            try:
                with self.db.session() as session:
                    count, age = outbox.backlog(session)
            except Exception as error:  # never fail the scrape
                self._failed("outbox", error)
            else:
                yield _gauge("crm_outbox_backlog", "Events waiting to be published", service, count)
                yield _gauge(
                    "crm_outbox_oldest_age_seconds",
                    "Age of the oldest unpublished event (0 when none waits)",
                    service,
                    age or 0.0,
                )
        depth = self._dlq_depth() if self.dead_letters else None
        if depth is not None:
            yield _gauge("crm_dlq_depth", "Messages in the dead-letter queue", service, depth)

    def _dlq_depth(self) -> int | None:
        with self._lock:  # one broker question per cache period, however many scrapers
            fetched_at, depth = self._dlq
            if time.monotonic() - fetched_at < self.dlq_cache_seconds:
                return depth
            try:
                depth = dead_letter_depth(self.settings)
            except Exception as error:
                self._failed("dlq", error)
                depth = None
            self._dlq = (time.monotonic(), depth)
            return depth

    @staticmethod
    def _failed(check: str, error: Exception) -> None:
        SCRAPE_ERRORS.labels(check).inc()
        log.warning("metrics: could not read %s: %r", check, error)


def _gauge(name: str, documentation: str, service: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=["service"])
    gauge.add_metric([service], value)
    return gauge


def worker_metrics_address(settings: Settings) -> tuple[str, int]:
    """`CRM_METRICS_HOST` and `CRM_<SERVICE>_WORKER_METRICS_PORT` (default: api port + 1000)."""
    service = settings.service.upper()
    api_port = int(os.environ.get(f"CRM_{service}_PORT", SERVICE_PORTS.get(settings.service, 0)))
    default = api_port + 1000 if api_port else 0  # a service with no known port: off
    port = os.environ.get(f"CRM_{service}_WORKER_METRICS_PORT") or str(default)
    return os.environ.get("CRM_METRICS_HOST") or "127.0.0.1", int(port)


def use_process_local_values() -> None:
    """Keep this process's metrics in memory, even if PROMETHEUS_MULTIPROC_DIR leaked in.

    That directory is the api's (gunicorn's workers sum their files there); a worker
    process serves its own endpoint and must not write files into it.
    """
    if os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None):
        log.info("PROMETHEUS_MULTIPROC_DIR ignored in the worker: it serves its own metrics")
        values.ValueClass = values.get_value_class()


def serve_worker_metrics(settings: Settings) -> Any:
    """Start the worker's /metrics endpoint; None when disabled (port 0) or the port is taken."""
    host, port = worker_metrics_address(settings)
    if port == 0:
        return None
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as error:  # another worker replica on this machine has it
        log.warning("worker metrics not served: %s:%d is unavailable (%s)", host, port, error)
        return None
    log.info("worker metrics on http://%s:%d/metrics", host, server.server_port)
    return server
