"""The outbox relay against the real broker, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pika
import pytest
import sqlalchemy as sa

from conftest import remember_queue
from shared.bus import declare_topology
from shared.config import Settings
from shared.db import Database
from shared.outbox import backlog, claim_batch, record_event
from shared.relay import OutboxRelay
from shared.testing import wait_until
from shared.tests.tcp_proxy import TcpProxy

COUNTED = "counter.incremented"


def notes_metadata() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table("notes", metadata, sa.Column("name", sa.String(64), primary_key=True))
    return metadata


def write_note(db: Database, name: str) -> str:
    """A business write and its event, committed together; the event id."""
    with db.session() as session:
        session.execute(db.metadata.tables["notes"].insert().values(name=name))
        return record_event(session, COUNTED, name, {"name": name})


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database("tests", database_url, notes_metadata())
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings("tests")


@pytest.fixture
def channel(settings: Settings) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A channel on the broker with the service's queue declared and bound."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    declare_topology(channel, settings, [COUNTED])
    yield channel
    connection.close()


def drain(channel, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    messages = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return messages
        messages.append((properties, body))


def unsent(db: Database) -> int:
    with db.session() as session:
        return backlog(session)[0]


def test_an_event_is_published_for_every_committed_write_and_none_for_a_rolled_back_one(
    settings: Settings, db: Database, channel
) -> None:
    committed = [write_note(db, "kept-1"), write_note(db, "kept-2")]
    with pytest.raises(RuntimeError), db.session() as session:
        record_event(session, COUNTED, "gone", {"name": "gone"})
        raise RuntimeError("the business write failed")

    assert OutboxRelay(settings, db).relay_until_empty(timeout=10) == 2

    received = drain(channel, settings.queue)
    assert [properties.message_id for properties, _ in received] == committed
    properties = received[0][0]
    assert (properties.type, properties.content_type) == (COUNTED, "application/json")
    assert properties.delivery_mode == 2
    assert unsent(db) == 0


def test_writes_succeed_while_the_broker_is_unreachable_and_are_delivered_after(
    settings: Settings, db: Database, channel
) -> None:
    broker = urlsplit(settings.amqp_url)
    proxy = TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672).start()
    relay = OutboxRelay(settings.with_overrides(amqp_url=proxy.url(settings.amqp_url)), db)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    try:
        expected = [write_note(db, "before")]
        wait_until(lambda: unsent(db) == 0)
        proxy.stop()
        wait_until(lambda: not relay.connected.is_set())
        expected += [write_note(db, f"during-{n}") for n in range(5)]  # commit fine
        time.sleep(0.5)  # the relay keeps trying against a closed port
        assert thread.is_alive() and unsent(db) == 5
        proxy.start()
        wait_until(lambda: unsent(db) == 0, timeout=20)
    finally:
        stop.set()
        thread.join(timeout=10)
        proxy.stop()
    assert not thread.is_alive()
    received = drain(channel, settings.queue)
    assert sorted(properties.message_id for properties, _ in received) == sorted(expected)


def test_a_row_refused_by_the_broker_is_not_marked_sent(
    settings: Settings, db: Database, channel
) -> None:
    full = f"{settings.amqp_prefix}full"
    remember_queue(settings.amqp_prefix, full)
    channel.queue_declare(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    channel.queue_bind(full, settings.exchange, COUNTED)
    event_id = write_note(db, "refused")

    assert OutboxRelay(settings, db).relay_until_empty(timeout=1) == 0
    assert unsent(db) == 1  # nacked: still waiting, released for the next claim

    channel.queue_delete(full)
    assert OutboxRelay(settings, db).relay_until_empty(timeout=10) == 1
    assert unsent(db) == 0
    assert [p.message_id for p, _ in drain(channel, settings.queue)][-1] == event_id


def test_two_relays_on_postgresql_never_claim_the_same_row(postgres_url: str) -> None:
    db = Database("tests", postgres_url, notes_metadata())
    db.create_all()
    try:
        for n in range(30):
            write_note(db, f"note-{n}")
        first = db.new_session()
        try:
            with first.begin():
                mine = {row.position for row in claim_batch(first, 20)}
                with db.session() as second:  # concurrent: the first still holds its locks
                    theirs = {row.position for row in claim_batch(second, 20)}
        finally:
            first.close()
        assert len(mine) == 20 and len(theirs) == 10
        assert not mine & theirs
    finally:
        db.dispose()


def test_two_relays_on_postgresql_publish_each_row_once(
    make_settings: Callable[..., Settings], postgres_url: str, channel
) -> None:
    settings = make_settings("tests", relay_batch_size=25)
    db = Database("tests", postgres_url, notes_metadata())
    db.create_all()
    try:
        expected = [write_note(db, f"note-{n}") for n in range(300)]
        relays = [OutboxRelay(settings, db) for _ in range(2)]
        threads = [threading.Thread(target=r.relay_until_empty, args=(20,)) for r in relays]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        received = [p.message_id for p, _ in drain(channel, settings.queue)]
        assert sorted(received) == sorted(expected)  # each exactly once
        assert sum(relay.published for relay in relays) == len(expected)
    finally:
        db.dispose()
