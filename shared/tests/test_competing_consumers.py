"""Two consumers on one queue, on PostgreSQL, receiving the same event id at the same time.

The inbox's primary key decides which one applies it: the other's transaction fails on it
(IntegrityError), falls back to one event per transaction, finds the event applied and
acknowledges it as a duplicate. Nothing is applied twice and nothing is dead-lettered.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator

import pika
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.bus import EventConsumer, retry_queue_name
from shared.config import Settings
from shared.db import Database
from shared.deadletters import list_dead_letters
from shared.events import Envelope
from shared.testing import wait_until
from shared.tests.test_bus import (
    COUNTED,
    PRODUCER,
    consuming,
    count,
    counters_metadata,
    increment,
    queue_depth,
)

FALLBACK = "batch transaction failed; applying one by one"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def fallbacks_on_integrity_error(self) -> int:
        return sum(
            1
            for record in self.records
            if record.getMessage() == FALLBACK
            and record.exc_info is not None
            and isinstance(record.exc_info[1], IntegrityError)
        )


@pytest.fixture
def bus_log() -> Iterator[_Records]:
    records, logger = _Records(), logging.getLogger("shared.bus")
    logger.addHandler(records)
    yield records
    logger.removeHandler(records)


@pytest.fixture
def db(postgres_url: str) -> Iterator[Database]:
    database = Database("tests", postgres_url, counters_metadata())
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings("tests", consumer_prefetch=10)


def another_transaction_waits_on_a_lock(db: Database) -> bool:
    with db.engine.connect() as connection:
        query = sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return bool(connection.execute(query).scalar_one())


def contested_increment(session: Session, envelope: Envelope) -> None:
    """Increment; for a contested event, first hold the transaction open until the other
    consumer waits on the inbox row this one inserted (so both really meet)."""
    if envelope.data.get("contested"):
        deadline = time.monotonic() + 5  # then go on: the assertions below say it never met
        while time.monotonic() < deadline and not another_transaction_waits_on_a_lock(
            session.info["db"]
        ):
            time.sleep(0.02)
    increment(session, envelope)


def body(name: str, *, contested: bool = False) -> bytes:
    data = {"name": name, "contested": contested}
    return Envelope(COUNTED, PRODUCER, name, data).to_json().encode()


def publish_all(settings: Settings, bodies: list[bytes]) -> None:
    """Publish back to back on one channel, then wait for every confirm: arriving at once."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        properties = pika.BasicProperties(delivery_mode=2)
        for message in bodies:
            channel.basic_publish(settings.exchange, COUNTED, message, properties)
    finally:
        connection.close()


@contextlib.contextmanager
def two_consumers(settings: Settings, db: Database) -> Iterator[list[EventConsumer]]:
    handlers = {COUNTED: contested_increment}
    with consuming(settings, db, handlers) as first, consuming(settings, db, handlers) as second:
        yield [first, second]


def assert_all_settled(settings: Settings) -> None:
    """Every message acknowledged (none back in the queue once the consumers closed),
    none waiting for a retry, none dead-lettered."""
    assert queue_depth(settings, settings.queue) == 0
    for delay in settings.retry_delays:
        assert queue_depth(settings, retry_queue_name(settings, delay)) == 0
    assert list_dead_letters(settings) == []


def inbox_rows(db: Database) -> int:
    with db.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(db.inbox)) or 0


def test_the_same_event_at_two_consumers_at_once_is_applied_once(
    settings: Settings, db: Database, bus_log: _Records
) -> None:
    with two_consumers(settings, db):
        twice = body("raced", contested=True)
        publish_all(settings, [twice, twice])  # the broker hands one to each consumer
        wait_until(lambda: count(db, "raced") == 1)
        wait_until(lambda: bus_log.fallbacks_on_integrity_error() == 1, what="for the loser")
        publish_all(settings, [body("marker")])
        wait_until(lambda: count(db, "marker") == 1)
    assert count(db, "raced") == 1
    assert inbox_rows(db) == 2
    assert_all_settled(settings)


def test_batches_mixing_raced_duplicates_and_fresh_events_apply_each_once(
    settings: Settings, db: Database, bus_log: _Records
) -> None:
    a, c = body("a", contested=True), body("c", contested=True)
    b, d, e = body("b"), body("d"), body("e")
    # Round robin: one consumer gets a, b, c, e, the other a, d, c, a - each batch holds
    # events the other applies at the same moment, and the second has a within itself.
    with two_consumers(settings, db):
        publish_all(settings, [a, a, b, d, c, c, e, a])
        wait_until(lambda: all(count(db, name) == 1 for name in "abcde"), timeout=20)
        time.sleep(0.5)  # any late duplicate would be applied now
    assert {name: count(db, name) for name in "abcde"} == dict.fromkeys("abcde", 1)
    assert inbox_rows(db) == 5
    assert bus_log.fallbacks_on_integrity_error() >= 1
    assert_all_settled(settings)
    assert json.loads(a)["id"]  # the raced ids are real envelopes, not malformed ones
