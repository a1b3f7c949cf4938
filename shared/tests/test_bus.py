"""The consumer against the real broker, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pika
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.bus import EventConsumer, PermanentError, declare_topology
from shared.config import Settings
from shared.db import Database
from shared.deadletters import list_dead_letters, publish_raw, replay_dead_letters
from shared.events import Envelope
from shared.testing import wait_until
from shared.tests.tcp_proxy import TcpProxy

# A real type from its real producer: the consumer refuses a source the type may not have.
COUNTED = "note.created"
PRODUCER = "contacts"


def counters_metadata() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table(
        "counters",
        metadata,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    return metadata


def increment(session: Session, envelope: Envelope) -> None:
    """The handler under test: counters[data.name] += 1."""
    table = session.info["db"].metadata.tables["counters"]
    name = envelope.data["name"]
    updated = session.execute(
        table.update().where(table.c.name == name).values(value=table.c.value + 1)
    )
    if not updated.rowcount:
        session.execute(table.insert().values(name=name, value=1))


def count(db: Database, name: str) -> int:
    table = db.metadata.tables["counters"]
    with db.session() as session:
        return session.scalar(sa.select(table.c.value).where(table.c.name == name)) or 0


def event_body(name: str, **extra: object) -> bytes:
    return json.dumps(
        {**Envelope(COUNTED, PRODUCER, name, {"name": name}).to_dict(), **extra}
    ).encode()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database("tests", database_url, counters_metadata())
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings("tests")


@contextlib.contextmanager
def consuming(settings: Settings, db: Database, handlers: dict) -> Iterator[EventConsumer]:
    consumer = EventConsumer(settings, db, handlers, poll_seconds=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert consumer.consuming.wait(10), "consumer never connected"
        yield consumer
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive(), "consumer did not stop"


def queue_depth(settings: Settings, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def test_a_redelivered_event_is_applied_once(settings: Settings, db: Database) -> None:
    with consuming(settings, db, {COUNTED: increment}):
        body = event_body("once")
        publish_raw(settings, COUNTED, body)
        publish_raw(settings, COUNTED, body)
        publish_raw(settings, COUNTED, event_body("marker"))
        wait_until(lambda: count(db, "marker") == 1)
        assert count(db, "once") == 1
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(db.inbox)) == 2


def test_malformed_messages_go_to_the_dlq_and_consuming_goes_on(
    settings: Settings, db: Database
) -> None:
    with consuming(settings, db, {COUNTED: increment}):
        publish_raw(settings, COUNTED, b"not json at all")
        publish_raw(settings, COUNTED, json.dumps({"id": "x", "data": 1}))
        publish_raw(settings, COUNTED, event_body("after"))
        wait_until(lambda: count(db, "after") == 1)
    letters = list_dead_letters(settings)
    assert [letter.reason for letter in letters] == ["malformed", "malformed"]
    assert letters[0].body == b"not json at all"
    assert "not JSON" in (letters[0].error or "")
    assert letters[1].headers["x-crm-queue"] == settings.queue


def test_unknown_envelope_fields_are_ignored(settings: Settings, db: Database) -> None:
    with consuming(settings, db, {COUNTED: increment}):
        publish_raw(settings, COUNTED, event_body("future", shiny_new_field={"a": 1}))
        wait_until(lambda: count(db, "future") == 1)
    assert list_dead_letters(settings) == []


def test_unknown_event_types_are_acked_and_ignored(settings: Settings, db: Database) -> None:
    unknown = json.dumps({**json.loads(event_body("x")), "type": "thing.unheard_of"})
    with consuming(settings, db, {COUNTED: increment}):
        connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
        connection.channel().basic_publish("", settings.queue, unknown.encode())
        connection.close()
        publish_raw(settings, COUNTED, event_body("marker"))
        wait_until(lambda: count(db, "marker") == 1)
    assert queue_depth(settings, settings.queue) == 0  # acked, so not returned on close
    assert list_dead_letters(settings) == []


def test_a_transient_failure_is_retried_with_delay_and_applied_once(
    settings: Settings, db: Database
) -> None:
    calls: list[float] = []

    def flaky(session: Session, envelope: Envelope) -> None:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise ConnectionError("the mail server is down")
        increment(session, envelope)

    with consuming(settings, db, {COUNTED: flaky}):
        publish_raw(settings, COUNTED, event_body("flaky"))
        wait_until(lambda: count(db, "flaky") == 1)
    assert len(calls) == 3
    assert calls[1] - calls[0] >= settings.retry_delays[0] * 0.9
    assert calls[2] - calls[1] >= settings.retry_delays[1] * 0.9
    assert list_dead_letters(settings) == []


def test_a_handler_that_always_fails_ends_in_the_dlq_after_its_retries(
    settings: Settings, db: Database
) -> None:
    def broken(session: Session, envelope: Envelope) -> None:
        raise RuntimeError("always broken")

    with consuming(settings, db, {COUNTED: broken}):
        publish_raw(settings, COUNTED, event_body("doomed"))
        wait_until(lambda: queue_depth(settings, settings.dead_letter_queue) == 1)
    (letter,) = list_dead_letters(settings)
    assert letter.reason == "retries_exhausted"
    assert letter.attempt == len(settings.retry_delays)
    assert "always broken" in (letter.error or "")


def test_a_permanent_error_goes_to_the_dlq_at_once_and_can_be_replayed(
    settings: Settings, db: Database
) -> None:
    refusing = threading.Event()
    refusing.set()

    def picky(session: Session, envelope: Envelope) -> None:
        if refusing.is_set():
            raise PermanentError("no such customer")
        increment(session, envelope)

    with consuming(settings, db, {COUNTED: picky}):
        publish_raw(settings, COUNTED, event_body("replayed"))
        wait_until(lambda: queue_depth(settings, settings.dead_letter_queue) == 1)
        listed = [
            (letter.body, letter.reason, letter.attempt) for letter in list_dead_letters(settings)
        ]
        again = [
            (letter.body, letter.reason, letter.attempt) for letter in list_dead_letters(settings)
        ]
        assert listed == again  # listing does not consume
        assert [(reason, attempt) for _, reason, attempt in listed] == [("permanent", 0)]
        refusing.clear()
        assert replay_dead_letters(settings) == 1
        wait_until(lambda: count(db, "replayed") == 1)
    assert list_dead_letters(settings) == []


def test_the_consumer_survives_losing_its_connection(settings: Settings, db: Database) -> None:
    broker = urlsplit(settings.amqp_url)
    proxy = TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672).start()
    proxied = settings.with_overrides(amqp_url=proxy.url(settings.amqp_url))
    try:
        with consuming(proxied, db, {COUNTED: increment}) as consumer:
            publish_raw(settings, COUNTED, event_body("before"))
            wait_until(lambda: count(db, "before") == 1)
            proxy.stop()
            wait_until(lambda: not consumer.consuming.is_set())
            publish_raw(settings, COUNTED, event_body("during"))
            time.sleep(0.3)  # the consumer keeps retrying against a closed port
            proxy.start()
            wait_until(lambda: count(db, "during") == 1, timeout=20)
    finally:
        proxy.stop()
    assert count(db, "before") == 1


def test_declaring_the_topology_twice_is_harmless(settings: Settings) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        channel = connection.channel()
        declare_topology(channel, settings, [COUNTED])
        declare_topology(channel, settings, [COUNTED])
        assert channel.is_open
    finally:
        connection.close()


def test_a_handler_for_every_event_sees_each_type_after_its_own_handler(
    settings: Settings, db: Database
) -> None:
    from shared.bus import ALL_EVENTS

    def count_everything(session: Session, envelope: Envelope) -> None:
        increment(session, Envelope(COUNTED, PRODUCER, "all", {"name": f"all:{envelope.type}"}))

    other = json.dumps({**json.loads(event_body("x")), "type": "note.deleted"})
    with consuming(settings, db, {COUNTED: increment, ALL_EVENTS: count_everything}):
        publish_raw(settings, COUNTED, event_body("own"))
        publish_raw(settings, "note.deleted", other.encode())
        wait_until(lambda: count(db, "all:note.deleted") == 1)
        wait_until(lambda: count(db, f"all:{COUNTED}") == 1)
        assert count(db, "own") == 1
    assert list_dead_letters(settings) == []


def test_an_event_from_a_source_that_may_not_publish_its_type_is_dead_lettered(
    settings: Settings, db: Database
) -> None:
    forged = json.dumps({**json.loads(event_body("forged")), "source": "marketing"})
    with consuming(settings, db, {COUNTED: increment}):
        publish_raw(settings, COUNTED, forged.encode())
        publish_raw(settings, COUNTED, event_body("after"))
        wait_until(lambda: count(db, "after") == 1)
        wait_until(lambda: queue_depth(settings, settings.dead_letter_queue) == 1)
    assert count(db, "forged") == 0
    (letter,) = list_dead_letters(settings)
    assert letter.reason == "forbidden_source"
    assert "'marketing' may not publish note.created" in (letter.error or "")
    with db.session() as session:  # never claimed in the inbox: a replay is judged afresh
        assert session.scalar(sa.select(sa.func.count()).select_from(db.inbox)) == 1


def test_a_type_nobody_may_publish_is_dead_lettered_by_a_handler_of_every_event(
    settings: Settings, db: Database
) -> None:
    from shared.bus import ALL_EVENTS

    invented = json.dumps({**json.loads(event_body("x")), "type": "contact.invented"})
    with consuming(settings, db, {COUNTED: increment, ALL_EVENTS: increment}):
        publish_raw(settings, "contact.invented", invented.encode())
        publish_raw(settings, COUNTED, event_body("after"))
        wait_until(lambda: count(db, "after") == 2)  # its own handler, then the one for all
        wait_until(lambda: queue_depth(settings, settings.dead_letter_queue) == 1)
    assert count(db, "x") == 0
    assert [letter.reason for letter in list_dead_letters(settings)] == ["forbidden_source"]
