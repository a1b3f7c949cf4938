"""Reads through the gateway against a raw Flask JSON endpoint: same gunicorn, same run.

    python bench/gateway_reads.py [--duration S] [--rounds R] [--warmup S] [--clients N]
                                  [--workers W] [--client-processes P]

Every server is a real gunicorn started with `crm run`'s own command (its Procfile lines:
deploy/gunicorn.conf.py, `GUNICORN_WORKERS` = --workers, sync workers as deployed) on free
127.0.0.1 ports:
(a) a raw Flask app (`raw_app` below) answering one small contact-like JSON object;
(b) the gateway forwarding `GET /api/v1/contacts/{id}` (bearer token) to contacts;
(c) the gateway's unified customer view `GET /api/v1/customers/{id}`, asking contacts, sales,
    support, marketing and notifications in parallel.
The system runs on SQLite files under a temporary CRM_DATA_DIR, migrated and with its
admin made as `crm run` does, with broker names of its own (deleted at the end) and the
rate limiter off (`CRM_RATE_LIMITS=off`; to measure its counting instead, run with
`CRM_RATE_LIMITS=on CRM_RATE_LIMIT_API=1000000000`). It is seeded through the gateway (a
company, its contact, two deals - one won -, a ticket, a subscription) with the workers
running; they are stopped before measuring: reads need none. Also measured, for where the
time goes: the contacts service read directly, without the gateway; and the floors, a
second raw app (same command) that forwards (a)'s answer from the first with the
gateway's HTTP client, or fetches it 5 or 11 times in parallel as the view asks its
services: what (b) and (c) would cost if the gateway and the services did no work at all.

The load: N client threads, each with a requests.Session, spread over P processes (so the
client's GIL is not the limit); the targets take turns, R rounds of a warm-up and then
duration/R seconds each (so a change in the machine's other load falls on all of them),
every latency recorded. gunicorn's sync workers close the connection after each answer,
so every request (the gateway's own calls to the services too) opens a new one. The
client shares the machine's cores with the servers. "CPU ms per request": the CPU each
process group (a gunicorn master and its workers) used in the measured windows, divided
by the answers; the client's is estimated from its processes' CPU time. Goals (the
issue): (b) at least 40% of (a)'s requests/s; (c) at least 20%, with a p99 under 5x (a)'s.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import platform
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ADMIN_EMAIL = "bench-admin@example.com"
ADMIN_PASSWORD = "bench admin password"
TIMEOUT = 10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RAW_CONTACT = {
    "first_name": "Ada",
    "last_name": "Bench",
    "email": "ada@bench.example",
    "phone": "+44 20 7946 0000",
    "title": "CTO",
    "lifecycle_stage": "customer",
    "tags": ["vip"],
    "lifetime_value": {"amount": "1200.00", "currency": "EUR"},
}


# Where the floor targets' raw app sends its calls (the bench's own setting, not the CRM's).
RAW_UPSTREAM_ENV = "BENCH_RAW_UPSTREAM"


def raw_app() -> Any:
    """(a): a Flask app with one JSON endpoint and nothing else (gunicorn imports this).

    Started with BENCH_RAW_UPSTREAM (another raw app's address) it also answers the floors
    of (b) and (c): the same endpoint's answer fetched from the upstream with the gateway's
    HTTP client (`/forwarded/...`), or fetched `calls` times in parallel on a kept thread
    pool, as the customer view asks its services (`/composed/...?calls=N`). No auth, no
    database, no logs: what forwarding and composing cost before any of the CRM's work.
    """
    from concurrent.futures import ThreadPoolExecutor

    from flask import Flask, Response, jsonify, request

    app = Flask("raw")

    @app.get("/contacts/<contact_id>")
    def contact(contact_id: str) -> Any:
        return jsonify({"id": contact_id, **RAW_CONTACT})

    upstream = os.environ.get(RAW_UPSTREAM_ENV)
    if not upstream:
        return app
    from gateway.upstream import Upstream

    http, pool = Upstream(), ThreadPoolExecutor(32)

    @app.get("/forwarded/contacts/<contact_id>")
    def forwarded(contact_id: str) -> Any:
        status, body = http.get_json(f"{upstream}/contacts/{contact_id}", {}, TIMEOUT)
        return jsonify(body), status

    @app.get("/composed/<contact_id>")
    def composed(contact_id: str) -> Response:
        url = f"{upstream}/contacts/{contact_id}"
        calls = int(request.args.get("calls", "5"))
        answers = [pool.submit(http.get_json, url, {}, TIMEOUT) for _ in range(calls)]
        return jsonify({str(n): answer.result()[1] for n, answer in enumerate(answers)})

    return app


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Processes:
    """The bench's own processes, each leading a process group (gunicorn and its workers)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with (self.log_dir / f"{name}.log").open("wb") as log:
            self.running[name] = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, *names: str) -> None:
        """SIGTERM to the groups this bench started, then wait (SIGKILL after 30 s)."""
        stopping = [self.running.pop(name) for name in names]
        for process in stopping:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in stopping:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    def stop_all(self) -> None:
        self.stop(*self.running)

    def wait_until_up(self, name: str, url: str, seconds: float = 90) -> None:
        process, deadline = self.running[name], time.monotonic() + seconds
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{name} never answered {url}")

    def cpu_seconds(self, name: str) -> float:
        """User + system CPU of every live process in the group (the master and its workers)."""
        group, total = self.running[name].pid, 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == group:  # fields after the name: state, ppid, pgrp, ...
                    total += int(fields[11]) + int(fields[12])
        return total / CLOCK_TICKS


def system_env(data_dir: Path, ports: dict[str, int], workers: int, prefix: str) -> dict[str, str]:
    """What `crm run` would be given here: our ports, data dir, broker prefix and admin."""
    env = {
        **os.environ,
        **{f"CRM_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        **{f"CRM_{name.upper()}_URL": f"http://127.0.0.1:{port}" for name, port in ports.items()},
        "CRM_DATA_DIR": str(data_dir),
        "CRM_AMQP_PREFIX": prefix,
        "CRM_ADMIN_EMAIL": ADMIN_EMAIL,
        "CRM_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # The code has no default secret: a random one of this run's own (unless given).
        "CRM_JWT_SECRET": os.environ.get("CRM_JWT_SECRET") or secrets.token_urlsafe(48),
        # Off unless the caller says otherwise: the bench measures forwarding, not 429s.
        "CRM_RATE_LIMITS": os.environ.get("CRM_RATE_LIMITS", "off"),
        "CRM_RELAY_IDLE_SECONDS": "0.05",
        "CRM_SMTP_CATCHER_PORT": str(free_port()),
        "CRM_PUBLIC_URL": f"http://127.0.0.1:{ports['gateway']}",
        "GUNICORN_WORKERS": str(workers),
    }
    env.pop("CRM_SMTP_URL", None)
    return env


def prepare_system() -> dict[str, list[str]]:
    """Migrate every service and make the admin as `crm run` does; its Procfile's commands."""
    from gateway.app import bootstrap_admin, create_app
    from shared.cli import SERVICES, check_broker, migrate, procfile
    from shared.config import load_settings

    settings = load_settings("gateway")
    if not check_broker(settings.amqp_url):
        raise RuntimeError(f"RabbitMQ is not reachable at {settings.amqp_url.rsplit('@', 1)[-1]}")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for name in SERVICES:
        migrate(name)
    app = create_app()
    bootstrap_admin(app.extensions["crm.db"], settings)
    app.extensions["crm.db"].engine.dispose()
    commands = {}
    for line in procfile().splitlines():
        name, command = line.split(":", 1)
        commands[name] = shlex.split(command)
    return commands


def raw_command(gateway_argv: list[str], port: int) -> list[str]:
    """The gateway's gunicorn command line with the raw app and port in their places."""
    argv = list(gateway_argv)
    argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
    argv[-1] = "bench.gateway_reads:raw_app()"
    return argv


def delete_broker_names() -> None:
    """The exchanges and queues made under the bench's prefix (CRM_AMQP_PREFIX)."""
    import pika

    from shared.bus import retry_queue_name
    from shared.cli import SERVICES
    from shared.config import load_settings

    settings = load_settings("gateway")
    if not settings.amqp_prefix.startswith("bench-"):
        return
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        channel = connection.channel()
        for name in (n for n, spec in SERVICES.items() if spec.has_worker and spec.consumes):
            service = load_settings(name)
            retries = [retry_queue_name(service, delay) for delay in service.retry_delays]
            for queue in (service.queue, service.dead_letter_queue, *retries):
                channel.queue_delete(queue)
        channel.exchange_delete(settings.exchange)
        channel.exchange_delete(settings.dead_letter_exchange)
    finally:
        connection.close()


# --- seeding through the gateway ------------------------------------------------------------


def login(api: str) -> requests.Session:
    answer = requests.post(
        f"{api}/auth/token",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        timeout=TIMEOUT,
    )
    answer.raise_for_status()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return session


def post_until_made(
    session: requests.Session, url: str, body: dict[str, Any], status: int = 201
) -> dict[str, Any]:
    """POST until the service answers `status` (it may not know the contact from events yet)."""
    deadline = time.monotonic() + 30
    while True:
        answer = session.post(url, json=body, timeout=TIMEOUT)
        if answer.status_code == status:
            return answer.json()
        if time.monotonic() > deadline:
            raise RuntimeError(f"POST {url}: {answer.status_code} {answer.text[:500]}")
        time.sleep(0.2)


def seed(api: str, session: requests.Session) -> str:
    """A company, its contact, two deals (one won), a ticket, a subscription: the contact id."""
    company = post_until_made(
        session, f"{api}/companies", {"name": "Bench Ltd", "domain": "bench.example"}
    )
    person = {key: RAW_CONTACT[key] for key in ("first_name", "last_name", "email", "title")}
    contact = post_until_made(
        session, f"{api}/contacts", {**person, "company_id": company["id"], "tags": ["vip"]}
    )
    deals = [
        post_until_made(
            session, f"{api}/deals", {"name": name, "contact_id": contact["id"], "amount": amount}
        )
        for name, amount in (("Renewal", "1200.00"), ("Upgrade", "300.00"))
    ]
    post_until_made(session, f"{api}/deals/{deals[0]['id']}/win", {}, status=200)
    ticket = {"contact_id": contact["id"], "subject": "Where is my order", "channel": "email"}
    post_until_made(session, f"{api}/tickets", ticket)
    consent = {"contact_id": contact["id"], "status": "subscribed"}
    post_until_made(session, f"{api}/subscriptions", consent)
    return contact["id"]


def wait_for_timeline(api: str, session: requests.Session, contact_id: str) -> int:
    """Entries on the contact's timeline once the won deal and the ticket reached it."""
    deadline, entries = time.monotonic() + 20, 0
    while time.monotonic() < deadline:
        answer = session.get(f"{api}/contacts/{contact_id}/interactions", timeout=TIMEOUT)
        entries = len(answer.json().get("items", [])) if answer.status_code == 200 else 0
        if entries >= 2:
            break
        time.sleep(0.3)
    return entries


# --- the load -------------------------------------------------------------------------------


def client_process(
    url: str,
    headers: dict[str, str],
    threads: int,
    window: tuple[float, float],
    results: Any,
) -> None:
    """`threads` keep-alive clients GETting `url` until the window's end; latencies in it."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def run() -> None:
        session = requests.Session()
        session.headers.update(headers)
        mine, failed = [], 0
        while time.time() < window[1]:
            started = time.perf_counter()
            try:
                ok = session.get(url, timeout=TIMEOUT).status_code == 200
            except requests.RequestException:
                ok = False
            took, finished = time.perf_counter() - started, time.time()
            if window[0] <= finished < window[1]:
                if ok:
                    mine.append(took)
                else:
                    failed += 1
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    workers = [threading.Thread(target=run) for _ in range(threads)]
    cpu_before = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put((latencies, errors[0], time.process_time() - cpu_before))


@dataclass(frozen=True)
class Target:
    label: str
    url: str
    headers: dict[str, str]


@dataclass
class Tally:
    """What the measured windows of one target gathered."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    rounds: list[float] = field(default_factory=list)  # requests/s of each window
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process group

    def add(
        self, latencies: list[float], errors: int, seconds: float, cpu: dict[str, float]
    ) -> None:
        self.latencies.extend(latencies)
        self.errors += errors
        self.seconds += seconds
        self.rounds.append(len(latencies) / seconds)
        for name, spent in cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + spent

    @property
    def requests_per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, fraction: float) -> float:
        """Nearest rank, in milliseconds; 0 for no values."""
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        rank = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
        return ordered[rank] * 1000

    def cpu_ms_per_request(self) -> dict[str, float]:
        count = max(len(self.latencies), 1)
        return {name: s * 1000 / count for name, s in self.cpu.items() if s > 0.05}


def load(
    target: Target,
    seconds: float,
    args: argparse.Namespace,
    cpu: Callable[[], dict[str, float]],
) -> tuple[list[float], int, dict[str, float]]:
    """Latencies and errors of one measured window; CPU seconds spent in it, by process."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start = time.time() + 1.0  # the client processes take a moment to start
    window = (start + args.warmup, start + args.warmup + seconds)
    shares = [args.clients // args.client_processes] * args.client_processes
    for index in range(args.clients % args.client_processes):
        shares[index] += 1
    clients = [
        context.Process(
            target=client_process, args=(target.url, target.headers, share, window, results)
        )
        for share in shares
        if share
    ]
    for client in clients:
        client.start()
    try:
        time.sleep(max(0.0, window[0] - time.time()))
        before = cpu()
        time.sleep(max(0.0, window[1] - time.time()))
        spent = {name: used - before[name] for name, used in cpu().items()}
        latencies, errors, client_cpu = [], 0, 0.0
        for _ in clients:
            got, failed, used = results.get(timeout=seconds + args.warmup + 60)
            latencies.extend(got)
            errors += failed
            client_cpu += used * seconds / (seconds + args.warmup + 1.0)  # the window's share
    finally:  # interrupted, a client would wait forever to hand over its latencies
        for client in clients:
            client.join(2)
            if client.is_alive():
                client.terminate()
                client.join(5)
    return latencies, errors, {"client (approx.)": client_cpu, **spent}


def measure(targets: list[Target], args: argparse.Namespace, processes: Processes) -> list[Tally]:
    """Each target in turn, `--rounds` times over, so a change of background load hits all."""

    def cpu() -> dict[str, float]:
        return {name: processes.cpu_seconds(name) for name in processes.running}

    tallies = [Tally() for _ in targets]
    seconds = args.duration / args.rounds
    for _ in range(args.rounds):
        for target, tally in zip(targets, tallies, strict=True):
            latencies, errors, spent = load(target, seconds, args, cpu)
            tally.add(latencies, errors, seconds, spent)
    return tallies


def answer_size(target: Target) -> int:
    """The target's answer in bytes, after checking it answers 200."""
    answer = requests.get(target.url, headers=target.headers, timeout=TIMEOUT)
    if answer.status_code != 200:
        raise RuntimeError(f"{target.label}: {answer.status_code} {answer.text[:500]}")
    return len(answer.content)


def print_figures(target: Target, tally: Tally, size: int) -> None:
    rounds = ", ".join(f"{rate:,.0f}" for rate in tally.rounds)
    where = ", ".join(f"{name} {ms:.2f}" for name, ms in tally.cpu_ms_per_request().items())
    print(
        f"{target.label:<42} {tally.requests_per_second:>6,.0f} req/s ({rounds})"
        f"  p50 {tally.percentile_ms(0.5):6.1f} ms  p99 {tally.percentile_ms(0.99):6.1f} ms"
        f"  errors {tally.errors}  {size:,} B\n{'':<42} CPU ms per request: {where}"
    )


# --- the run --------------------------------------------------------------------------------


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def print_ratios(raw: Tally, forwarded: Tally, view: Tally) -> None:
    def verdict(met: bool) -> str:
        return "met" if met else "NOT met"

    via_gateway = forwarded.requests_per_second / raw.requests_per_second
    composed = view.requests_per_second / raw.requests_per_second
    raw_p99 = raw.percentile_ms(0.99)
    tail = view.percentile_ms(0.99) / raw_p99 if raw_p99 else math.inf
    print(f"(b)/(a) requests/s: {via_gateway:.2f} (goal >= 0.40: {verdict(via_gateway >= 0.4)})")
    print(f"(c)/(a) requests/s: {composed:.2f} (goal >= 0.20: {verdict(composed >= 0.2)})")
    print(f"(c) p99 / (a) p99:  {tail:.1f}x (goal < 5x: {verdict(tail < 5)})")


def print_floors(raw: Tally, floors: list[tuple[str, Tally]]) -> None:
    """What the goals would be against apps that do nothing but forward or compose."""
    print("\nfloors (no auth, no database, no logs: only gunicorn, Flask and the HTTP client):")
    raw_p99 = raw.percentile_ms(0.99) or math.inf
    for label, tally in floors:
        share = tally.requests_per_second / raw.requests_per_second
        tail = tally.percentile_ms(0.99) / raw_p99
        print(f"{label:<42} {share:.2f} of (a)'s requests/s, p99 {tail:.1f}x (a)'s")


def start_system(
    processes: Processes,
    commands: dict[str, list[str]],
    env: dict[str, str],
    metrics_dir: Path,
    ports: dict[str, int],
) -> None:
    """Every api (gunicorn) and every worker of `crm run`; no SMTP catcher (nothing is sent)."""
    for name, argv in commands.items():
        if name == "smtp-catcher":
            continue
        (metrics_dir / name).mkdir(parents=True)
        processes.start(name, argv, {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir / name)})
    for name, port in ports.items():
        processes.wait_until_up(name, f"http://127.0.0.1:{port}/health")


def set_up(args: argparse.Namespace, directory: Path, processes: Processes) -> list[Target]:
    """The system started and seeded, its workers stopped, the raw app beside it: the targets."""
    from shared.cli import SERVICES

    ports = {name: free_port() for name in SERVICES}
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    env = system_env(directory / "var", ports, args.workers, prefix)
    os.environ.update(env)  # prepare_system and procfile read the environment, as `crm run`
    commands = prepare_system()
    metrics = directory / "metrics"
    start_system(processes, commands, env, metrics, ports)
    api = f"http://127.0.0.1:{ports['gateway']}/api/v1"
    session = login(api)
    contact_id = seed(api, session)
    entries = wait_for_timeline(api, session, contact_id)
    # Reads need no worker: they would only take CPU.
    processes.stop(*[name for name in processes.running if name.endswith("-worker")])
    raw_port = free_port()
    (metrics / "raw").mkdir()
    raw_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics / "raw")}
    processes.start("raw", raw_command(commands["gateway"], raw_port), raw_env)
    raw_url = f"http://127.0.0.1:{raw_port}/contacts/{contact_id}"
    processes.wait_until_up("raw", raw_url)
    floor_port = free_port()
    (metrics / "raw-floor").mkdir()
    floor_env = {**raw_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics / "raw-floor")}
    floor_env[RAW_UPSTREAM_ENV] = f"http://127.0.0.1:{raw_port}"
    processes.start("raw-floor", raw_command(commands["gateway"], floor_port), floor_env)
    floor = f"http://127.0.0.1:{floor_port}"
    processes.wait_until_up("raw-floor", f"{floor}/forwarded/contacts/{contact_id}")
    print(f"seeded contact {contact_id} (timeline: {entries} entries); workers stopped")
    bearer = {"Authorization": session.headers["Authorization"]}
    contacts = f"http://127.0.0.1:{ports['contacts']}/api/v1/contacts/{contact_id}"
    return [
        Target("(a) raw Flask JSON endpoint", raw_url, {}),
        Target("(b) GET /api/v1/contacts/{id}, gateway", f"{api}/contacts/{contact_id}", bearer),
        Target("(c) GET /api/v1/customers/{id}", f"{api}/customers/{contact_id}", bearer),
        Target("(context) contacts service, no gateway", contacts, bearer),
        Target(
            "(floor b) raw app forwarding to raw app",
            f"{floor}/forwarded/contacts/{contact_id}",
            {},
        ),
        Target("(floor c) raw app asking raw app 5x", f"{floor}/composed/{contact_id}?calls=5", {}),
        Target(
            "(floor c) raw app asking raw app 11x", f"{floor}/composed/{contact_id}?calls=11", {}
        ),
    ]


def run(args: argparse.Namespace, directory: Path, processes: Processes) -> None:
    targets = set_up(args, directory, processes)
    sizes = [answer_size(target) for target in targets]
    print(f"load average before: {load_average()}\n", flush=True)
    tallies = measure(targets, args, processes)
    load_after = load_average()
    for target, tally, size in zip(targets, tallies, sizes, strict=True):
        print_figures(target, tally, size)
    print(f"\nload average after: {load_after}")
    print_ratios(*tallies[:3])
    print_floors(
        tallies[0],
        [(t.label, tally) for t, tally in zip(targets, tallies, strict=True) if "floor" in t.label],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds measured a target, all rounds"
    )
    parser.add_argument("--rounds", type=int, default=3, help="turns taken by the targets")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    parser.add_argument(
        "--client-processes", type=int, default=2, help="processes the clients run in"
    )
    args = parser.parse_args()
    # A plain `kill` stops the bench like Ctrl-C: through the finally blocks that clean up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cpus = os.cpu_count()
    print(
        f"gateway reads: {args.clients} clients in {args.client_processes} processes, "
        f"{args.rounds} rounds of {args.warmup:g} s warm-up + {args.duration / args.rounds:g} s "
        f"a target; gunicorn {args.workers} workers each (deploy/gunicorn.conf.py, "
        "`crm run`'s command)\n"
        f"{cpus} CPUs ({platform.machine()}), Python {platform.python_version()}; the client "
        "runs on the same cores as every server, so it takes CPU from them",
        flush=True,
    )
    in_scratch_directory("crm-bench-gateway-", lambda path, processes: run(args, path, processes))


def in_scratch_directory(prefix: str, run: Callable[[Path, Processes], None]) -> None:
    """run(directory, processes) in a temporary directory; whatever happens, the processes
    it started are stopped and its broker names deleted (Ctrl-C or SIGTERM: exit 130)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as directory:
        (Path(directory) / "logs").mkdir()
        processes = Processes(Path(directory) / "logs")
        try:
            run(Path(directory), processes)
        except KeyboardInterrupt:
            print("interrupted; processes stopped", file=sys.stderr)
            sys.exit(130)
        finally:
            processes.stop_all()
            with contextlib.suppress(Exception):
                delete_broker_names()


if __name__ == "__main__":
    main()
