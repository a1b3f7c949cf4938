"""A realistic mix through the gateway at a fixed rate, beside raw baselines in the same run.

    python bench/load.py [--rate R] [--duration S] [--contacts N] [--workers W] [--threads T]

The whole system runs as `crm run` would start it (every api under gunicorn with
deploy/gunicorn.conf.py and `GUNICORN_WORKERS` = --workers, every worker, SQLite files under
a temporary CRM_DATA_DIR, broker names of its own, rate limits off), seeded through the
gateway with --contacts contacts. Then, open loop (a request is due every 1/R s whether or
not the earlier ones have answered, and its latency counts from when it was due, so a
stall shows in the percentiles instead of slowing the load down), for --duration seconds:

    45% GET  /api/v1/contacts/{id}          a contact read
    15% GET  /api/v1/contacts?q=...         a search
    10% GET  /api/v1/customers/{id}         the unified view (eleven service calls)
    20% PATCH /api/v1/contacts/{id}         a write: contact.updated, which marketing replicates
    10% POST /api/v1/tickets                a write: ticket.created, which contacts puts on the
                                            person's timeline

Event lag: from a write's 2xx answer (its commit) until its effect is in the consuming
service's database (marketing's replica holds the new version; the contact's timeline holds
the ticket), read by a prober every 10 ms straight from the SQLite files.

Baselines, measured in the same run on the same cores:
- raw Flask: a one-route Flask app under the same gunicorn, at the same rate and duration;
- raw pika: a message published (no confirms) to a queue of the bench's own and consumed
  by another connection, as many as writes and at the writes' rate: publish to consume;
- raw SQL insert: one row inserted and committed into a SQLite file, as many as writes.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import signal
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gateway_reads import (  # noqa: E402  (after the path above)
    Processes,
    free_port,
    in_scratch_directory,
    login,
    post_until_made,
    prepare_system,
    raw_command,
    start_system,
    system_env,
)

TIMEOUT = 10
MIX = (("read", 45), ("search", 15), ("view", 10), ("update", 20), ("ticket", 10))
WRITES = ("update", "ticket")


@dataclass
class Results:
    """Latencies (seconds) by kind, failures by kind, and event lags by write kind."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    lags: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, took: float, ok: bool) -> None:
        with self.lock:
            if ok:
                self.latencies.setdefault(kind, []).append(took)
            else:
                self.errors[kind] = self.errors.get(kind, 0) + 1

    def all_latencies(self) -> list[float]:
        return [took for kind in self.latencies.values() for took in kind]


def percentile_ms(values: list[float], fraction: float) -> float:
    """Nearest rank, in milliseconds; NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))] * 1000


def open_loop(rate: float, seconds: float, threads: int, send: Callable[[int], None]) -> float:
    """Call send(n) for the n-th request when it is due (every 1/rate s); the seconds taken."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for n in range(int(rate * seconds)):
            due = started + n / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            pool.submit(send, n)
    return time.perf_counter() - started


# --- the mix ----------------------------------------------------------------------------


class LagProbe:
    """Watches the consuming services' SQLite files for each write's effect; lags per kind."""

    def __init__(self, data_dir: Path, results: Results) -> None:
        self.results = results
        self.marketing = self._open(data_dir / "marketing.db")
        self.contacts = self._open(data_dir / "contacts.db")
        self.pending_versions: dict[str, tuple[int, float]] = {}  # contact -> (version, answered)
        self.pending_tickets: dict[str, float] = {}  # ticket subject -> answered
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def expect_version(self, contact_id: str, version: int, answered: float) -> None:
        with self.lock:
            known = self.pending_versions.get(contact_id)
            # A later write of the same contact shows the earlier one's effect too: keep both
            # lags honest by timing the newest version from the earliest pending answer.
            self.pending_versions[contact_id] = (version, known[1] if known else answered)

    def expect_ticket(self, subject: str, answered: float) -> None:
        with self.lock:
            self.pending_tickets[subject] = answered

    def pending(self) -> int:
        with self.lock:
            return len(self.pending_versions) + len(self.pending_tickets)

    def _poll(self) -> None:
        with self.lock:
            versions, tickets = dict(self.pending_versions), dict(self.pending_tickets)
        seen_at = time.perf_counter()
        if versions:
            marks = ",".join("?" * len(versions))
            rows = self.marketing.execute(
                f"SELECT id, version FROM contacts WHERE id IN ({marks})", list(versions)
            ).fetchall()
            for contact_id, version in rows:
                wanted, answered = versions[contact_id]
                if version >= wanted:
                    self._seen("update", answered, seen_at, self.pending_versions, contact_id)
        if tickets:
            marks = ",".join("?" * len(tickets))
            rows = self.contacts.execute(
                "SELECT subject FROM interactions WHERE event_type = 'ticket.created'"
                f" AND subject IN ({marks})",
                list(tickets),
            ).fetchall()
            for (subject,) in rows:
                self._seen("ticket", tickets[subject], seen_at, self.pending_tickets, subject)

    def _seen(self, kind: str, answered: float, seen_at: float, pending: dict, key: str) -> None:
        with self.lock:
            pending.pop(key, None)
        with self.results.lock:
            self.results.lags.setdefault(kind, []).append(max(0.0, seen_at - answered))

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._poll()
            except sqlite3.OperationalError:  # a writer holds the lock a moment: poll again
                pass
            time.sleep(0.01)

    def drain(self, seconds: float) -> int:
        """Wait for the pending effects (at most `seconds`); how many never showed."""
        deadline = time.monotonic() + seconds
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stopping.set()
        self.thread.join()
        return self.pending()


class Mix:
    """One request of the mix per call, chosen by a seeded draw so every run asks the same."""

    def __init__(self, api: str, bearer: str, contacts: list[dict], probe: LagProbe) -> None:
        self.api, self.contacts, self.probe = api, contacts, probe
        self.local = threading.local()
        self.bearer = bearer
        kinds, weights = zip(*MIX, strict=True)
        draw = random.Random(7)
        self.plan = draw.choices(kinds, weights=weights, k=1_000_000)
        self.picks = [draw.randrange(len(contacts)) for _ in range(4096)]

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers["Authorization"] = self.bearer
        return self.local.session

    def call(self, n: int) -> tuple[str, bool]:
        kind, contact = self.plan[n], self.contacts[self.picks[n % len(self.picks)]]
        api, session = self.api, self.session()
        if kind == "read":
            answer = session.get(f"{api}/contacts/{contact['id']}", timeout=TIMEOUT)
        elif kind == "search":
            answer = session.get(f"{api}/contacts?q={contact['last_name']}", timeout=TIMEOUT)
        elif kind == "view":
            answer = session.get(f"{api}/customers/{contact['id']}", timeout=TIMEOUT)
        elif kind == "update":
            body = {"title": f"Load {n}"}
            answer = session.patch(f"{api}/contacts/{contact['id']}", json=body, timeout=TIMEOUT)
            if answer.ok:
                self.probe.expect_version(
                    contact["id"], answer.json()["version"], time.perf_counter()
                )
        else:
            subject = f"Load ticket {n} {uuid.uuid4().hex[:6]}"
            body = {"contact_id": contact["id"], "subject": subject, "channel": "email"}
            answer = session.post(f"{api}/tickets", json=body, timeout=TIMEOUT)
            if answer.ok:
                self.probe.expect_ticket(subject, time.perf_counter())
        return kind, answer.ok


def drive(rate: float, seconds: float, threads: int, call: Callable, results: Results) -> float:
    """The open loop over `call`, each latency timed from when its request was due."""
    started = time.perf_counter()

    def send(n: int) -> None:
        due = started + n / rate
        try:
            kind, ok = call(n)
        except requests.RequestException:
            kind, ok = "error", False
        results.record(kind, time.perf_counter() - due, ok)

    return open_loop(rate, seconds, threads, send)


# --- baselines ---------------------------------------------------------------------------


def raw_pika_lags(amqp_url: str, count: int, rate: float) -> list[float]:
    """Publish (no confirms) to a queue of our own at `rate`; publish-to-consume seconds."""
    import pika

    queue = f"bench-load-{uuid.uuid4().hex[:8]}"
    lags: list[float] = []
    ready = threading.Event()

    def consume() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        channel.queue_declare(queue, auto_delete=True)
        ready.set()
        for _method, _props, body in channel.consume(queue, auto_ack=True):
            lags.append(time.perf_counter() - float(body))
            if len(lags) == count:
                break
        channel.cancel()
        connection.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    ready.wait(10)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    started = time.perf_counter()
    for n in range(count):
        time.sleep(max(0.0, started + n / rate - time.perf_counter()))
        channel.basic_publish("", queue, str(time.perf_counter()).encode())
    consumer.join(60)
    connection.close()
    return lags


def raw_sql_inserts(path: Path, count: int) -> list[float]:
    """One row inserted and committed at a time into a SQLite file (WAL, as the services)."""
    database = sqlite3.connect(path)
    database.execute("PRAGMA journal_mode=WAL")
    database.execute("CREATE TABLE rows (id TEXT PRIMARY KEY, title TEXT, at REAL)")
    took = []
    for n in range(count):
        started = time.perf_counter()
        database.execute("INSERT INTO rows VALUES (?, ?, ?)", (uuid.uuid4().hex, f"t{n}", n))
        database.commit()
        took.append(time.perf_counter() - started)
    database.close()
    return took


# --- the run ------------------------------------------------------------------------------


def seed(api: str, session: requests.Session, count: int) -> list[dict]:
    """`count` contacts with distinct surnames (searches find one each)."""
    return [
        post_until_made(
            session,
            f"{api}/contacts",
            {"first_name": "Load", "last_name": f"Person{n:04d}", "email": f"load{n}@bench.test"},
        )
        for n in range(count)
    ]


def row(label: str, latencies: list[float], errors: int, seconds: float | None = None) -> str:
    rate = f"{len(latencies) / seconds:7.1f}/s" if seconds else " " * 9
    return (
        f"{label:<40} {rate} n={len(latencies):<6} p50 {percentile_ms(latencies, 0.5):7.1f}"
        f"  p95 {percentile_ms(latencies, 0.95):7.1f}  p99 {percentile_ms(latencies, 0.99):7.1f}"
        f" ms  errors {errors}"
    )


def run(args: argparse.Namespace, directory: Path, processes: Processes) -> None:
    from shared.cli import SERVICES

    ports = {name: free_port() for name in SERVICES}
    env = system_env(directory / "var", ports, args.workers, f"bench-{uuid.uuid4().hex[:8]}.")
    os.environ.update(env)  # prepare_system and procfile read the environment, as `crm run`
    commands = prepare_system()
    start_system(processes, commands, env, directory / "metrics", ports)
    api = f"http://127.0.0.1:{ports['gateway']}/api/v1"
    session = login(api)
    contacts = seed(api, session, args.contacts)
    raw_port = free_port()
    (directory / "metrics" / "raw").mkdir()
    raw_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(directory / "metrics" / "raw")}
    processes.start("raw", raw_command(commands["gateway"], raw_port), raw_env)
    raw_url = f"http://127.0.0.1:{raw_port}/contacts/{contacts[0]['id']}"
    processes.wait_until_up("raw", raw_url)
    time.sleep(3)  # the seed's events settle before anything is measured

    raw = Results()
    plain = threading.local()

    def raw_call(_n: int) -> tuple[str, bool]:
        if not hasattr(plain, "session"):
            plain.session = requests.Session()
        return "raw", plain.session.get(raw_url, timeout=TIMEOUT).ok

    raw_seconds = drive(args.rate, args.duration, args.threads, raw_call, raw)

    results = Results()
    probe = LagProbe(directory / "var", results)
    probe.thread.start()
    mix = Mix(api, session.headers["Authorization"], contacts, probe)
    seconds = drive(args.rate, args.duration, args.threads, mix.call, results)
    unseen = probe.drain(60)
    writes = sum(len(results.latencies.get(kind, [])) for kind in WRITES)

    from shared.config import load_settings

    amqp_url = load_settings("gateway").amqp_url
    pika_lags = raw_pika_lags(amqp_url, writes, writes / seconds)
    inserts = raw_sql_inserts(directory / "raw-insert.db", writes)
    report(args, raw, raw_seconds, results, seconds, unseen, pika_lags, inserts)


def report(
    args: argparse.Namespace,
    raw: Results,
    raw_seconds: float,
    results: Results,
    seconds: float,
    unseen: int,
    pika_lags: list[float],
    inserts: list[float],
) -> None:
    print(f"\nrequests (latency from when each was due), {seconds:.1f} s:")
    raw_all = raw.all_latencies()
    print(row("(baseline) raw Flask", raw_all, sum(raw.errors.values()), raw_seconds))
    everything = results.all_latencies()
    print(row("mix through the gateway", everything, sum(results.errors.values()), seconds))
    for kind, _weight in MIX:
        print(row(f"  {kind}", results.latencies.get(kind, []), results.errors.get(kind, 0)))
    print("\nevent lag (write answered -> effect in the consuming service's database):")
    print(row("(baseline) raw pika publish->consume", pika_lags, 0))
    lags = [lag for kind in results.lags.values() for lag in kind]
    print(row("all writes", lags, unseen))
    print(row("  contact.updated -> marketing", results.lags.get("update", []), 0))
    print(row("  ticket.created -> contacts timeline", results.lags.get("ticket", []), 0))
    print(f"  effects never seen within 60 s: {unseen}")
    print("\nwrites:")
    print(row("(baseline) raw SQL insert+commit", inserts, 0))
    write_latencies = [t for kind in WRITES for t in results.latencies.get(kind, [])]
    print(row("writes through the gateway", write_latencies, 0))

    def ratio(mine: list[float], base: list[float], fraction: float) -> str:
        return f"{percentile_ms(mine, fraction) / percentile_ms(base, fraction):.1f}x"

    achieved = len(everything) / seconds / args.rate
    raw_achieved = len(raw_all) / raw_seconds / args.rate
    print(
        f"\nratios: mix answered {achieved:.2f} of the offered rate (raw Flask {raw_achieved:.2f});"
        f" mix p50 {ratio(everything, raw_all, 0.5)} and p99 {ratio(everything, raw_all, 0.99)}"
        f" raw Flask's; event lag p50 {ratio(lags, pika_lags, 0.5)} and p99"
        f" {ratio(lags, pika_lags, 0.99)} raw pika's; write p50"
        f" {ratio(write_latencies, inserts, 0.5)} a raw insert's"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=40.0, help="requests offered per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--contacts", type=int, default=40, help="contacts seeded")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per api")
    parser.add_argument("--threads", type=int, default=64, help="client threads (open loop)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(
        f"load: {args.rate:g} requests/s offered for {args.duration:g} s, mix "
        + ", ".join(f"{kind} {weight}%" for kind, weight in MIX)
        + f"; gunicorn {args.workers} workers an api\n{os.cpu_count()} CPUs"
        f" ({platform.machine()}), Python {platform.python_version()}; client, servers,"
        " broker and databases share these cores",
        flush=True,
    )
    in_scratch_directory("crm-bench-load-", lambda path, processes: run(args, path, processes))


if __name__ == "__main__":
    main()
