"""Metrics: counters moved by the real relay and consumer, scrape-time gauges, endpoints."""

from __future__ import annotations

import logging
import os
import socket
import urllib.request
from collections.abc import Callable, Iterator

import pika
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session

from shared.bus import prepare_queues
from shared.config import Settings
from shared.db import Database
from shared.deadletters import publish_raw
from shared.events import Envelope
from shared.logs import _CorrelationFilter, correlation_id
from shared.metrics import BacklogCollector, serve_worker_metrics, worker_metrics_address
from shared.outbox import record_event
from shared.testing import consuming_worker, make_event, wait_until

# A real type of its real producer (the consumer checks the source); its label is "contacts".
NOTED = "note.created"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def consumed(settings: Settings, event_type: str, outcome: str) -> float:
    labels = {"service": settings.service, "type": event_type, "outcome": outcome}
    return sample("crm_events_consumed_total", **labels)


def notes_metadata() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table("notes", metadata, sa.Column("event_id", sa.String(36), primary_key=True))
    return metadata


def remember(session: Session, envelope: Envelope) -> None:
    session.execute(session.info["db"].metadata.tables["notes"].insert(), {"event_id": envelope.id})


def noted(db: Database) -> int:
    with db.session() as session:
        notes = db.metadata.tables["notes"]
        return session.scalar(sa.select(sa.func.count()).select_from(notes)) or 0


def gauges(collector: BacklogCollector) -> dict[str, float]:
    return {family.name: family.samples[0].value for family in collector.collect()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def db(tmp_path) -> Iterator[Database]:
    database = Database("contacts", f"sqlite:///{tmp_path / 'metered.db'}", notes_metadata())
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings("contacts")


def test_publishing_and_consuming_move_the_event_counters(settings: Settings, db: Database):
    published = sample("crm_events_published_total", service="contacts", type=NOTED)
    handled = consumed(settings, NOTED, "handled")
    duplicate = consumed(settings, NOTED, "duplicate")
    with consuming_worker(settings, db, {NOTED: remember}):
        with db.session() as session:
            record_event(session, NOTED, "n1", {})
        wait_until(lambda: noted(db) == 1, what="for the event to be handled")
        wait_until(lambda: consumed(settings, NOTED, "handled") == handled + 1)
        again = make_event(NOTED, {}, source="contacts").to_json()
        publish_raw(settings, NOTED, again)
        publish_raw(settings, NOTED, again)
        wait_until(lambda: consumed(settings, NOTED, "duplicate") == duplicate + 1)
    assert sample("crm_events_published_total", service="contacts", type=NOTED) == published + 1
    assert consumed(settings, NOTED, "handled") == handled + 2


def test_poison_and_failing_messages_count_as_retried_then_dead_lettered(
    settings: Settings, db: Database
):
    def broken(_session: Session, _envelope: Envelope) -> None:
        raise RuntimeError("always")

    malformed = consumed(settings, "malformed", "dead_lettered")
    retried = consumed(settings, NOTED, "retried")
    dead = consumed(settings, NOTED, "dead_lettered")
    with consuming_worker(settings, db, {NOTED: broken}):
        publish_raw(settings, NOTED, b"not json at all")
        wait_until(lambda: consumed(settings, "malformed", "dead_lettered") == malformed + 1)
        publish_raw(settings, NOTED, make_event(NOTED, {}, source="contacts").to_json())
        wait_until(lambda: consumed(settings, NOTED, "dead_lettered") == dead + 1)
    assert consumed(settings, NOTED, "retried") == retried + len(settings.retry_delays)


def test_the_collector_reports_outbox_backlog_and_dlq_depth(
    make_settings: Callable[..., Settings], database_url: str
):
    settings = make_settings("metered")
    db = Database("metered", database_url, sa.MetaData())
    db.create_all()
    try:
        assert gauges(BacklogCollector(settings, db, dead_letters=False)) == {
            "crm_outbox_backlog": 0,
            "crm_outbox_oldest_age_seconds": 0,
        }
        with db.session() as session:
            for number in range(3):
                record_event(session, NOTED, f"n{number}", {})
        prepare_queues(settings, [NOTED])
        connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            for _ in range(2):
                channel.basic_publish("", settings.dead_letter_queue, b"{}")
        finally:
            connection.close()
        read = gauges(BacklogCollector(settings, db))
        assert read["crm_outbox_backlog"] == 3 and read["crm_outbox_oldest_age_seconds"] >= 0
        assert read["crm_dlq_depth"] == 2
    finally:
        db.dispose()


def test_an_unreachable_broker_leaves_the_dlq_gauge_out_and_counts_one_error(db: Database):
    settings = Settings("metered", db.engine.url, str(db.engine.url), "amqp://g:g@127.0.0.1:1/%2F")
    collector = BacklogCollector(settings, db)
    errors = sample("crm_metrics_scrape_errors_total", check="dlq")
    assert "crm_dlq_depth" not in gauges(collector)
    assert "crm_dlq_depth" not in gauges(collector)  # cached: not asked again at once
    assert sample("crm_metrics_scrape_errors_total", check="dlq") == errors + 1


def test_an_apps_metrics_include_http_and_backlog_gauges(
    make_settings: Callable[..., Settings], database_url: str
):
    from services.contacts.app import create_app

    settings = make_settings("contacts")
    prepare_queues(settings, ["contact.nothing"])
    app = create_app(
        {
            "database_url": database_url,
            "create_tables": True,
            "amqp_url": settings.amqp_url,
            "amqp_prefix": settings.amqp_prefix,
        }
    )
    try:
        client = app.test_client()
        client.get("/health")
        text = client.get("/metrics").get_data(as_text=True)
    finally:
        app.extensions["crm.db"].dispose()
    assert 'crm_http_request_duration_seconds_bucket{endpoint="/health"' in text
    assert 'crm_outbox_backlog{service="contacts"} 0.0' in text
    assert 'crm_dlq_depth{service="contacts"} 0.0' in text


def test_the_worker_metrics_port_defaults_to_the_api_port_plus_1000(monkeypatch):
    settings = Settings("contacts", None, "sqlite://", "amqp://")  # type: ignore[arg-type]
    monkeypatch.delenv("CRM_CONTACTS_PORT", raising=False)
    monkeypatch.delenv("CRM_CONTACTS_WORKER_METRICS_PORT", raising=False)
    monkeypatch.delenv("CRM_METRICS_HOST", raising=False)
    assert worker_metrics_address(settings) == ("127.0.0.1", 9001)
    monkeypatch.setenv("CRM_CONTACTS_WORKER_METRICS_PORT", "0")
    assert serve_worker_metrics(settings) is None


def test_the_worker_serves_its_counters(settings: Settings, monkeypatch):
    port = free_port()
    monkeypatch.setenv("CRM_CONTACTS_WORKER_METRICS_PORT", str(port))
    server = serve_worker_metrics(settings)
    assert server is not None
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "crm_events_consumed_total" in text and "crm_events_published_total" in text


def test_a_taken_worker_metrics_port_is_a_warning_not_a_crash(settings, monkeypatch, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("CRM_CONTACTS_WORKER_METRICS_PORT", str(taken.getsockname()[1]))
        with caplog.at_level(logging.WARNING, logger="shared.metrics"):
            assert serve_worker_metrics(settings) is None
    assert "worker metrics not served" in caplog.text


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(_CorrelationFilter("metered"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_requests_id_reaches_the_log_lines_of_the_consumer(settings: Settings, db: Database):
    handler_log = logging.getLogger("tests.correlated")

    def logging_handler(session: Session, envelope: Envelope) -> None:
        handler_log.warning("handling %s", envelope.id)
        remember(session, envelope)

    records = _Records()
    handler_log.addHandler(records)
    try:
        with consuming_worker(settings, db, {NOTED: logging_handler}):
            token = correlation_id.set("req-abc-123")  # as the api sets it from X-Request-ID
            try:
                with db.session() as session:
                    record_event(session, NOTED, "n1", {})
            finally:
                correlation_id.reset(token)
            wait_until(lambda: noted(db) == 1, what="for the event to be handled")
    finally:
        handler_log.removeHandler(records)
    [record] = records.records
    assert record.request_id == "req-abc-123"  # type: ignore[attr-defined]


def test_a_leaked_multiprocess_dir_is_ignored_by_the_worker(monkeypatch, tmp_path):
    from prometheus_client import values

    from shared.metrics import use_process_local_values

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored after the test
    use_process_local_values()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert values.ValueClass is values.MutexValue
