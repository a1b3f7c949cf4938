"""`crm run` (what `make run` does) as one real process group, for tests of the whole system.

Used by the end-to-end, security, fault and fuzz tests: free ports, a PostgreSQL schema per
service, the settings `crm run` is given (ports, data directory, databases, broker names of
the test's own, quick retries and relay), starting it with its output in a file, waiting
for every service, stopping the group, and `eventually`, which fails when time runs out.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(names: Iterable[str]) -> dict[str, int]:
    """A free port for each name, all different: each probe stays bound until all are
    chosen (one free_port() after another was once given the same port twice)."""
    with contextlib.ExitStack() as probes:
        ports = {}
        for name in names:
            probe = probes.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            ports[name] = probe.getsockname()[1]
        return ports


@contextlib.contextmanager
def service_schemas(postgres_run_url: str, tag: str) -> Iterator[dict[str, str]]:
    """A PostgreSQL schema per service in the run's database, as production has a database
    per service: {service: its URL}; dropped when the block ends."""
    from shared.cli import SERVICES

    engine = sa.create_engine(postgres_run_url, isolation_level="AUTOCOMMIT")
    schemas = {name: f"{tag}_{name}" for name in SERVICES}
    url = sa.make_url(postgres_run_url)
    try:
        with engine.connect() as connection:
            for schema in schemas.values():
                connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        yield {
            name: url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
                hide_password=False
            )
            for name, schema in schemas.items()
        }
    finally:
        with engine.connect() as connection:
            for schema in schemas.values():
                connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def database_settings(databases: dict[str, str]) -> dict[str, str]:
    """The settings naming each service's database ({} keeps SQLite under CRM_DATA_DIR)."""
    return {f"{name.upper()}_DATABASE_URL": url for name, url in databases.items()}


def crm_run_environment(
    ports: dict[str, int], data_dir: Path, amqp_url: str, prefix: str, **settings: str
) -> dict[str, str]:
    """This environment plus what `crm run` needs here; `settings` (CRM_... names) win."""
    env = {
        **os.environ,
        **{f"CRM_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        "CRM_DATA_DIR": str(data_dir),
        "CRM_AMQP_URL": amqp_url,
        "CRM_AMQP_PREFIX": prefix,
        "CRM_RETRY_DELAYS": "0.2,0.5",
        "CRM_RELAY_IDLE_SECONDS": "0.05",
        "GUNICORN_WORKERS": "2",
        "CRM_SMTP_CATCHER_PORT": str(free_port()),  # mail kept as .eml under CRM_DATA_DIR/mail
        "CRM_PUBLIC_URL": f"http://127.0.0.1:{ports['gateway']}",
        # The gateway's /ready and /metrics listener (its default, port + 100, may be taken).
        "CRM_INTERNAL_BIND": f"127.0.0.1:{free_port()}",
        # Off: api port + 1000 could be a port another test's system has just been given.
        **{f"CRM_{name.upper()}_WORKER_METRICS_PORT": "0" for name in ports},
        **settings,
    }
    env.pop("CRM_SMTP_URL", None)  # the local catcher, never a real server
    return env


@contextlib.contextmanager
def running_crm(
    env: dict[str, str],
    ports: dict[str, int],
    log: Path,
    *,
    ready_path: str = "/health",
    seconds: float = 120,
) -> Iterator[subprocess.Popen]:
    """`crm run` until the block ends, once every service answers `ready_path`."""
    with log.open("wb") as output:  # a file, not a pipe: a full pipe would stall everything
        process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "run"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_up(f"http://127.0.0.1:{ports['gateway']}/health", process, seconds)
        for name, port in ports.items():
            base = f"http://127.0.0.1:{port}"
            if name == "gateway":
                base = internal_url(Path(env["CRM_DATA_DIR"]))
            wait_until_up(f"{base}{ready_path}", process, 60)
        yield process
    finally:
        stop_process_group(process, log)


def internal_url(data_dir: Path) -> str:
    """Where `crm run` put the gateway's internal listener (/ready, /metrics; 404 on its
    public port): the last `--bind` of the gateway's line of the Procfile it wrote."""
    procfile = (Path(data_dir) / "Procfile").read_text().splitlines()
    gateway = next(line for line in procfile if line.startswith("gateway:"))
    binds = re.findall(r"--bind (\S+)", gateway)
    return f"http://{binds[-1]}"


def wait_until_up(url: str, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"crm run exited with {process.returncode}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def stop_process_group(process: subprocess.Popen, log: Path) -> None:
    """Stop `crm run` (our own process group: honcho and its children), even if it ended."""
    if process.poll() is not None:  # honcho stops everything when one of its processes dies
        output = log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"crm run ended early ({process.returncode}):\n{output}")
    stop_groups([process], signal.SIGINT, grace_seconds=30)


def stop_groups(
    processes: Iterable[subprocess.Popen],
    signum: int = signal.SIGTERM,
    grace_seconds: float = 25,
) -> None:
    """Signal each process group whose leader still runs, then SIGKILL the groups still
    there after the grace period. A group is signalled only while its leader is unreaped,
    so its id is still ours."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
    deadline = time.monotonic() + grace_seconds
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def eventually(
    fetch: Callable[[], T],
    check: Callable[[T], object] = bool,
    timeout: float = 30,
    *,
    pause: float = 0.2,
    what: str = "",
) -> T:
    """Poll `fetch()` until `check(answer)` holds and return that answer; after `timeout`
    seconds fail, naming `what` and showing the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = fetch()
        if check(answer):
            return answer
        if time.monotonic() > deadline:
            shown = repr(getattr(answer, "text", answer))[:2000]
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what or check}; last: {shown}"
            )
        time.sleep(pause)
