"""Campaign fan-out: a launch until every `email.requested` is confirmed by RabbitMQ and
consumed, against raw pika publishing as many messages of the same size, same run.

    python bench/marketing_fanout.py [--recipients N] [--runs R] [--relay-process]
                                     [--chunk-size C] [--no-postgres]

N = 50,000 replica contacts in a static segment are bulk-inserted (not timed). A counting
consumer runs in a process of its own on a quorum queue of the bench's own bound to
`email.requested` (auto ack) and says when N messages have arrived.

- Service: the clock starts before `launch_campaign` (what `POST /launch` does) and stops
  when the consumer has counted N. Between the two: `run_campaigns` (the worker's timer:
  freeze the recipients with INSERT ... SELECT, then chunks of 1,000 requests written to
  the outbox) and `shared.relay.OutboxRelay` (batched publisher confirms) publishing them
  meanwhile. As deployed, the relay is a thread of the same worker process; with
  `--relay-process` it runs in a process of its own (a second worker replica's relay).
- Baseline: pika's SelectConnection publishing N prepared messages of the same size to
  the same exchange and routing key with publisher confirms, batched as shared/relay.py
  does (1,000 in flight, then wait for their confirms), until the consumer counted N.

On a SQLite file, then on PostgreSQL (database `crm_bench_marketing`, created and dropped;
server from CRM_BENCH_POSTGRES_URL, CRM_TEST_POSTGRES_URL or the local default). Broker
names carry a prefix of the bench's own and are deleted at the end. The goal: the service
at least a third of the baseline.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pika
import sqlalchemy as sa
from pika.adapters.select_connection import SelectConnection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch import postgres_database  # noqa: E402

from services.marketing import campaigns  # noqa: E402
from services.marketing.app import make_database  # noqa: E402
from services.marketing.campaign_fanout import CHUNK_SIZE, run_campaigns  # noqa: E402
from services.marketing.campaigns import Mailing, email_request  # noqa: E402
from services.marketing.models import Campaign, Contact, Segment, SegmentMember  # noqa: E402
from shared.config import Settings, load_settings  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.outbox import outbox_row  # noqa: E402
from shared.relay import OutboxRelay  # noqa: E402

BENCH_DATABASE = "crm_bench_marketing"
ROUTING_KEY = "email.requested"
WINDOW = 1000  # confirms in flight, as the relay's batch
CONTENT = {
    "subject": "Spring sale: everything at half price",
    "body_text": "Hello,\n\nThis week everything in the shop is at half price.\n\nThe team\n",
    "body_html": (
        "<html><body><p>Hello,</p><p>This week everything in the shop is at "
        '<a href="https://shop.example.com/sale">half price</a>.</p><p>The team</p>'
        "</body></html>"
    ),
}


def bench_settings(database_url: str, prefix: str) -> Settings:
    base = load_settings("marketing", environ=os.environ)
    return base.with_overrides(database_url=database_url, amqp_prefix=prefix, log_level="WARNING")


# --- the counting consumer ------------------------------------------------------------------


def _count_messages(amqp_url: str, queue: str, pipe: Any) -> None:
    """In its own process: count arrivals, answer "done" when the expected number came."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=2000)
    state = {"count": 0, "expected": None}

    def on_message(_channel: Any, _method: Any, _properties: Any, _body: bytes) -> None:
        state["count"] += 1

    channel.basic_consume(queue, on_message, auto_ack=True)
    pipe.send("ready")
    while True:
        if state["expected"] is None and pipe.poll():
            state["expected"] = pipe.recv()
            if state["expected"] == "stop":
                break
        connection.process_data_events(time_limit=0.01)
        if state["expected"] is not None and state["count"] >= state["expected"]:
            pipe.send(state["count"])
            state["count"], state["expected"] = 0, None
    connection.close()


class Counter:
    """The consumer process and its queue, bound to `email.requested` on the bench exchange."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queue = f"{settings.amqp_prefix}bench.email-requested"
        connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
        channel = connection.channel()
        channel.exchange_declare(settings.exchange, exchange_type="topic", durable=True)
        channel.queue_declare(self.queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(self.queue, settings.exchange, ROUTING_KEY)
        connection.close()
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(
            target=_count_messages, args=(settings.amqp_url, self.queue, child), daemon=True
        )
        self.process.start()
        if not self.pipe.poll(30) or self.pipe.recv() != "ready":
            raise RuntimeError("the counting consumer did not start")

    def expect(self, count: int) -> None:
        self.pipe.send(count)

    def wait(self, timeout: float = 900) -> None:
        if not self.pipe.poll(timeout):
            raise RuntimeError("the counting consumer stalled")
        self.pipe.recv()

    def close(self) -> None:
        self.pipe.send("stop")
        self.process.join(10)
        connection = pika.BlockingConnection(pika.URLParameters(self.settings.amqp_url))
        channel = connection.channel()
        channel.queue_delete(self.queue)
        channel.exchange_delete(self.settings.exchange)
        connection.close()


# --- the baseline ---------------------------------------------------------------------------


def raw_pika(settings: Settings, bodies: list[bytes], counter: Counter) -> float:
    """Seconds to publish `bodies` with batched confirms until all are counted."""
    state: dict[str, Any] = {"next": 0, "tag": 0, "outstanding": set()}
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")

    def publish_window(channel: Any) -> None:
        end = min(state["next"] + WINDOW, len(bodies))
        for body in bodies[state["next"] : end]:
            channel.basic_publish(settings.exchange, ROUTING_KEY, body, properties)
            state["tag"] += 1
            state["outstanding"].add(state["tag"])
        state["next"] = end

    def on_channel(channel: Any) -> None:
        def on_confirm(frame: Any) -> None:
            method = frame.method
            if method.NAME != "Basic.Ack":
                raise RuntimeError("the broker refused a message")
            if method.multiple:
                state["outstanding"] = {t for t in state["outstanding"] if t > method.delivery_tag}
            else:
                state["outstanding"].discard(method.delivery_tag)
            if state["outstanding"]:
                return
            if state["next"] < len(bodies):
                publish_window(channel)
            else:
                connection.close()

        channel.confirm_delivery(on_confirm, lambda _frame: publish_window(channel))

    connection = SelectConnection(
        pika.URLParameters(settings.amqp_url),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_close_callback=lambda _conn, _reason: connection.ioloop.stop(),
    )
    counter.expect(len(bodies))
    started = time.perf_counter()
    connection.ioloop.start()
    counter.wait()
    return time.perf_counter() - started


# --- the service ----------------------------------------------------------------------------


def seed(db: Database, count: int) -> str:
    """`count` replica contacts in a static segment, bulk-inserted; the segment's id."""
    segment_id = str(uuid.uuid4())
    with db.session() as session:
        session.add(Segment(id=segment_id, name="Everyone", kind="static"))
        for start in range(0, count, 10_000):
            ids = [str(uuid.uuid4()) for _ in range(start, min(start + 10_000, count))]
            contacts = [
                {
                    "id": contact_id,
                    "email": f"customer{start + n}@example.com",
                    "email_key": f"customer{start + n}@example.com",
                    "first_name": f"First{start + n}",
                    "last_name": f"Last{start + n}",
                    "custom_fields": {},
                }
                for n, contact_id in enumerate(ids)
            ]
            session.execute(sa.insert(Contact), contacts)
            members = [{"segment_id": segment_id, "contact_id": cid} for cid in ids]
            session.execute(sa.insert(SegmentMember), members)
    return segment_id


def sample_bodies(settings: Settings, count: int) -> list[bytes]:
    """`count` email.requested envelopes as the fan-out writes them (for the baseline)."""
    mailing = Mailing.of(Campaign(id=str(uuid.uuid4()), **CONTENT), str(uuid.uuid4()))
    bodies = []
    for n in range(count):
        recipient = SimpleNamespace(
            contact_id=str(uuid.uuid4()),
            email=f"customer{n}@example.com",
            first_name=f"First{n}",
            last_name=f"Last{n}",
        )
        data = email_request(settings, mailing, recipient)
        row = outbox_row("marketing", ROUTING_KEY, recipient.contact_id, data)
        bodies.append(row["payload"].encode())
    return bodies


def through_service(
    settings: Settings, db: Database, segment_id: str, count: int, counter: Counter, **how: Any
) -> tuple[float, float]:
    """Seconds from launch to N consumed, and to the fan-out's end."""
    with db.session() as session:
        draft = campaigns.create_campaign(
            session, {"name": "Spring sale", "segment_id": segment_id, **CONTENT}
        )
    relay = _start_relay(settings, db, how.get("relay_process", False))
    try:
        counter.expect(count)
        started = time.perf_counter()
        with db.session() as session:
            campaigns.launch_campaign(session, campaigns.get_campaign(session, draft.id))
        requested = run_campaigns(
            db, settings, chunk_size=how.get("chunk_size", CHUNK_SIZE), budget_seconds=3600
        )
        fanned_out = time.perf_counter() - started
        counter.wait()
        elapsed = time.perf_counter() - started
    finally:
        relay.stop()
    assert requested == count, f"{requested} of {count} requested"
    return elapsed, fanned_out


class _RelayThread:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.event = threading.Event()
        relay = OutboxRelay(settings, db)
        self.thread = threading.Thread(target=relay.run, args=(self.event,), daemon=True)
        self.thread.start()
        relay.connected.wait(30)

    def stop(self) -> None:
        self.event.set()
        self.thread.join(30)


def _relay_process_main(settings: Settings, stop: Any, ready: Any) -> None:
    db = make_database(settings)
    relay = OutboxRelay(settings, db)
    watcher = threading.Thread(target=lambda: (relay.connected.wait(30), ready.set()))
    watcher.start()
    relay.run(stop)
    db.dispose()


class _RelayProcess:
    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")
        self.event, ready = context.Event(), context.Event()
        self.process = context.Process(
            target=_relay_process_main, args=(settings, self.event, ready), daemon=True
        )
        self.process.start()
        ready.wait(60)

    def stop(self) -> None:
        self.event.set()
        self.process.join(30)


def _start_relay(settings: Settings, db: Database, in_process: bool) -> Any:
    return _RelayProcess(settings) if in_process else _RelayThread(settings, db)


# --- runs -----------------------------------------------------------------------------------


def rate(count: int, seconds: list[float]) -> float:
    return count / statistics.median(seconds)


def fresh(db: Database, count: int) -> str:
    """Empty tables, then the seeded contacts; on PostgreSQL the seeded tables analysed, as
    autovacuum would have done to a settled replica. (Only those: an ANALYZE of the empty
    outbox makes the relay's claim query plan for an empty table, and with 50,000 rows it
    then ran for minutes: see "Where the time goes".)"""
    db.metadata.drop_all(db.engine)
    db.create_all()
    segment_id = seed(db, count)
    if db.is_postgres:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("ANALYZE contacts, segments, segment_members"))
    return segment_id


def bench_database(
    name: str, url: str, args: argparse.Namespace, counter: Counter, bodies: list[bytes]
) -> None:
    """Baseline and service on one database, each run on fresh tables; medians printed."""
    settings = counter.settings.with_overrides(database_url=url)
    db = make_database(settings)
    runs: dict[str, list[float]] = {"raw": [], "service": [], "outbox": []}
    try:
        for _ in range(args.runs):
            segment_id = fresh(db, args.recipients)
            runs["raw"].append(raw_pika(settings, bodies, counter))
            elapsed, fanned_out = through_service(
                settings,
                db,
                segment_id,
                args.recipients,
                counter,
                relay_process=args.relay_process,
                chunk_size=args.chunk_size,
            )
            runs["service"].append(elapsed)
            runs["outbox"].append(fanned_out)
        report(name, args.recipients, runs)
    finally:
        db.metadata.drop_all(db.engine)
        db.dispose()


def report(name: str, count: int, runs: dict[str, list[float]]) -> None:
    baseline, ours = rate(count, runs["raw"]), rate(count, runs["service"])
    each = ", ".join(f"{count / seconds:,.0f}" for seconds in runs["service"])
    print(f"{name}: raw pika, batched confirms  {baseline:>8,.0f} msg/s")
    print(
        f"{name}: launch -> all consumed      {ours:>8,.0f} recipients/s"
        f"  ratio {ours / baseline:.2f} (goal >= 0.33)  runs: {each}"
    )
    alone = rate(count, runs["outbox"])
    print(f"{name}: launch -> outbox written    {alone:>8,.0f} recipients/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--relay-process", action="store_true")
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("services").setLevel(logging.WARNING)
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    with tempfile.TemporaryDirectory() as directory:
        settings = bench_settings(f"sqlite:///{Path(directory) / 'marketing.db'}", prefix)
        bodies = sample_bodies(settings, args.recipients)
        print(f"{args.recipients:,} recipients, messages of {len(bodies[0]):,} bytes")
        counter = Counter(settings)
        try:
            bench_database("SQLite", settings.database_url, args, counter, bodies)
            if not args.no_postgres:
                with postgres_database(BENCH_DATABASE) as url:
                    if url is not None:
                        bench_database("PostgreSQL", url, args, counter, bodies)
        finally:
            counter.close()


if __name__ == "__main__":
    main()
