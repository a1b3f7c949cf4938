"""The worker process: relay, consumer and timers together, stopped cleanly."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pika
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import Database
from shared.events import Envelope
from shared.outbox import record_event
from shared.worker import ServiceWorker, Timer


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_worker_relays_consumes_and_ticks_until_stopped(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    metadata = sa.MetaData()
    seen = sa.Table("seen", metadata, sa.Column("event_id", sa.String(36), primary_key=True))
    db = Database("contacts", database_url, metadata)  # a real producer of note.created
    db.create_all()
    ticks = threading.Event()

    def remember(session: Session, envelope: Envelope) -> None:
        session.execute(seen.insert().values(event_id=envelope.id))

    worker = ServiceWorker(
        make_settings("contacts"),
        db,
        {"note.created": remember},
        timers=[Timer(0.05, ticks.set, "tick")],
    )
    thread = worker.start()
    try:
        assert worker.consumer.consuming.wait(10)
        with db.session() as session:
            event_id = record_event(session, "note.created", "n1", {})

        def applied() -> bool:
            with db.session() as session:
                return session.scalar(sa.select(seen.c.event_id)) == event_id

        wait_until(applied)
        assert ticks.wait(5)
    finally:
        worker.stop()
        thread.join(timeout=10)
        db.dispose()
    assert not thread.is_alive()


def test_a_worker_without_handlers_relays_its_outbox_and_opens_no_queue(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings("tests")
    db = Database("tests", database_url, sa.MetaData())
    db.create_all()
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    channel.exchange_declare(settings.exchange, exchange_type="topic", durable=True)
    tap = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(tap, settings.exchange, routing_key="note.written")
    worker = ServiceWorker(settings, db, {})
    thread = worker.start()
    try:
        with db.session() as session:
            event_id = record_event(session, "note.written", "n1", {})
        received: list[bytes] = []

        def relayed() -> bool:
            method, _properties, body = channel.basic_get(tap, auto_ack=True)
            if method is not None:
                received.append(body)
            return bool(received)

        wait_until(relayed)
    finally:
        worker.stop()
        thread.join(timeout=10)
        db.dispose()
    assert not thread.is_alive()
    assert json.loads(received[0])["id"] == event_id
    assert not worker.consumer.consuming.is_set()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):  # the service queue was never made
        connection.channel().queue_declare(settings.queue, passive=True)
    connection.close()
