"""Event throughput: raw pika publish+consume vs the outbox relay + idempotent consumer.

    python bench/events.py [--events N]

Uses the broker at CRM_AMQP_URL (default local) under a unique name prefix, removed
at the end. Both paths use a quorum queue (what services use). Optionally also runs
the outbox path on PostgreSQL when CRM_BENCH_POSTGRES_URL is set.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pika
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.bus import EventConsumer, retry_queue_name  # noqa: E402
from shared.config import Settings, load_settings  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.events import Envelope  # noqa: E402
from shared.outbox import record_event  # noqa: E402
from shared.relay import OutboxRelay  # noqa: E402

EVENT_TYPE = "bench.happened"


def bench_settings(data_dir: str, database_url: str) -> Settings:
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    base = load_settings("bench", environ={**os.environ, "CRM_DATA_DIR": data_dir})
    return base.with_overrides(amqp_prefix=prefix, database_url=database_url)


def raw_pika(settings: Settings, count: int, queue_type: str = "quorum") -> float:
    """Publish `count` messages without confirms, then consume them with manual acks."""
    body = Envelope(EVENT_TYPE, "bench", "a", {"n": 1}).to_json().encode()
    queue = f"{settings.amqp_prefix}raw-{queue_type}"
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": queue_type})
    channel.basic_qos(prefetch_count=settings.consumer_prefetch)
    started = time.perf_counter()
    for _ in range(count):
        channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    received = 0
    for method, _properties, _body in channel.consume(queue, inactivity_timeout=30):
        if method is None:
            raise RuntimeError("raw consume stalled")
        channel.basic_ack(method.delivery_tag)
        received += 1
        if received == count:
            break
    elapsed = time.perf_counter() - started
    channel.cancel()
    channel.queue_delete(queue)
    connection.close()
    return count / elapsed


def _relay_process(settings: Settings, stop: Any) -> None:
    """The publishing service's worker: its relay, in a process of its own."""
    db = Database("bench", settings.database_url, sa.MetaData())
    OutboxRelay(settings, db).run(stop)
    db.dispose()


def outbox_path(settings: Settings, count: int) -> float:
    """Relay `count` pre-written outbox rows and handle them; events/s end to end.

    As deployed, the relay (publishing service's worker) and the consumer (consuming
    service's worker) run in two processes.
    """
    metadata = sa.MetaData()
    handled = sa.Table("handled", metadata, sa.Column("event_id", sa.String(36), primary_key=True))
    db = Database("bench", settings.database_url, metadata)
    db.create_all()
    for start in range(0, count, 1000):
        with db.session() as session:
            for n in range(start, min(start + 1000, count)):
                record_event(session, EVENT_TYPE, str(n), {"n": n})

    def handle(session, envelope) -> None:
        session.execute(handled.insert(), {"event_id": envelope.id})

    stop = threading.Event()
    consumer = EventConsumer(settings, db, {EVENT_TYPE: handle})
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    if not consumer.consuming.wait(30):
        raise RuntimeError("consumer did not connect")
    context = multiprocessing.get_context("spawn")
    relay_stop = context.Event()
    relay = context.Process(target=_relay_process, args=(settings, relay_stop))
    started = time.perf_counter()
    relay.start()
    try:
        deadline = time.monotonic() + 600
        while _count(db, handled) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("outbox path stalled")
            time.sleep(0.05)
        return count / (time.perf_counter() - started)
    finally:
        stop.set()
        relay_stop.set()
        relay.join(timeout=30)
        thread.join(timeout=30)
        db.dispose()


def _count(db: Database, table: sa.Table) -> int:
    with db.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(table)) or 0


def cleanup(settings: Settings) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    queues = [settings.queue, settings.dead_letter_queue]
    queues += [retry_queue_name(settings, delay) for delay in settings.retry_delays]
    for queue in queues:
        channel.queue_delete(queue)
    for exchange in (settings.exchange, settings.dead_letter_exchange):
        channel.exchange_delete(exchange)
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    count = parser.parse_args().events
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as data_dir:
        sqlite = bench_settings(data_dir, f"sqlite:///{data_dir}/bench.db")
        try:
            classic = raw_pika(sqlite, count, "classic")
            print(f"raw pika publish+consume (classic queue): {classic:.0f} msg/s")
            raw = raw_pika(sqlite, count)
            print(f"raw pika publish+consume: {raw:.0f} msg/s ({count} messages, quorum queue)")
            outbox = outbox_path(sqlite, count)
            print(f"outbox relay + consumer (SQLite): {outbox:.0f} events/s")
            print(f"ratio outbox/raw (SQLite): {outbox / raw:.2f} (goal >= 0.5)")
            print(f"ratio outbox/raw classic (SQLite): {outbox / classic:.2f}")
        finally:
            cleanup(sqlite)
        postgres_url = os.environ.get("CRM_BENCH_POSTGRES_URL")
        if postgres_url:
            bench_postgres(data_dir, postgres_url, count, raw)


def bench_postgres(data_dir: str, server_url: str, count: int, raw: float) -> None:
    """The outbox path on a scratch PostgreSQL database, dropped afterwards."""
    name = f"crm_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(sa.make_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    settings = bench_settings(data_dir, url)
    try:
        outbox = outbox_path(settings, count)
        print(f"outbox relay + consumer (PostgreSQL): {outbox:.0f} events/s")
        print(f"ratio outbox/raw (PostgreSQL): {outbox / raw:.2f}")
    finally:
        cleanup(settings)
        with contextlib.suppress(Exception), admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
