"""The gateway as production runs it: gunicorn with several workers, on a free local port.

Its database is migrated first (gunicorn's `create_app()` makes no tables); every service
URL points at a closed port, so forwarded calls fail fast with 503. gunicorn's access
log names the worker (pid) that answered each request.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from shared.config import SERVICE_PORTS
from shared.migrations import upgrade

ROOT = Path(__file__).resolve().parents[2]
ACCESS_LOG_FORMAT = "%(p)s %(s)s %(U)s"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RunningGateway:
    url: str
    access_log: Path
    closed_port: int

    def answers(self) -> list[tuple[int, int, str]]:
        """(worker pid, status, path) of each request answered so far."""
        if not self.access_log.exists():
            return []
        lines = self.access_log.read_text().splitlines()
        rows = [line.split(" ", 2) for line in lines if line.strip()]
        return [(int(pid.strip("<>")), int(status), path) for pid, status, path in rows]

    def wait_for_workers(self, count: int, deadline: float) -> None:
        """Until `count` workers have answered (each booted and accepting)."""
        while len({pid for pid, _status, _path in self.answers()}) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} gunicorn workers answered")
            _ask_health_twice_at_once(self.url)
            time.sleep(0.1)


def _ask_health_twice_at_once(url: str) -> None:
    threads = [
        threading.Thread(target=requests.get, args=(f"{url}/health",), kwargs={"timeout": 5})
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _wait_until_up(url: str, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn ended early ({process.returncode})")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or still booting
            pass
        time.sleep(0.2)
    raise AssertionError("gunicorn did not answer /health in time")


def _stop(process: subprocess.Popen) -> None:
    """Stop the gunicorn we started (its own process group: the master and its workers)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@contextmanager
def gunicorn_gateway(
    tmp_path: Path, database_url: str, workers: int = 2, **env: str
) -> Iterator[RunningGateway]:
    """Run `gateway.app:create_app()` under gunicorn until the block ends."""
    upgrade(ROOT / "gateway/migrations", database_url)
    port, closed_port = free_port(), free_port()
    metrics = tmp_path / "metrics"
    metrics.mkdir(exist_ok=True)
    access_log = tmp_path / "access.log"
    environment = {
        **os.environ,
        "GATEWAY_DATABASE_URL": database_url,
        "CRM_DATA_DIR": str(tmp_path / "var"),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        **{f"CRM_{name.upper()}_URL": f"http://127.0.0.1:{closed_port}" for name in SERVICE_PORTS},
        **env,
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(ROOT / "deploy/gunicorn.conf.py"),
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        str(access_log),
        "--access-logformat",
        ACCESS_LOG_FORMAT,
        "gateway.app:create_app()",
    ]
    with (tmp_path / "gunicorn.log").open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, time.monotonic() + 60)
        gateway = RunningGateway(url, access_log, closed_port)
        gateway.wait_for_workers(workers, time.monotonic() + 60)
        yield gateway
    finally:
        _stop(process)
