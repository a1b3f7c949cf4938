"""One service as real processes (`crm <service> migrate`, then its worker and maybe its api).

Each process writes to a log file (never a pipe, which would stall it when full) and runs
in its own process group, stopped by `ServiceProcesses.stop()` however the test ends.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import requests

from tests.crm_run import free_port, stop_groups

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 60.0  # a loaded 2-core machine may take long to import and migrate


def crm(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run one `crm ...` command to its end; its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class ServiceProcesses:
    """A service's worker (and api) for one test, on the test's own broker names."""

    def __init__(
        self,
        service: str,
        data_dir: Path,
        amqp_url: str,
        amqp_prefix: str,
        database_url: str | None = None,
        **env: str,
    ) -> None:
        self.service, self.data_dir = service, data_dir
        self.amqp_url = amqp_url
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "CRM_DATA_DIR": str(data_dir),
            "CRM_AMQP_URL": amqp_url,
            "CRM_AMQP_PREFIX": amqp_prefix,
            "CRM_RETRY_DELAYS": "0.2,0.5",
            "CRM_RELAY_IDLE_SECONDS": "0.05",
            "CRM_LOG_LEVEL": "INFO",
            f"CRM_{service.upper()}_WORKER_METRICS_PORT": "0",  # parallel tests share ports
            "GUNICORN_WORKERS": "1",
            **env,
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.env.pop("CRM_SMTP_URL", None)
        if database_url:
            self.env[f"{service.upper()}_DATABASE_URL"] = database_url
        self.processes: dict[str, subprocess.Popen] = {}
        self.api_url: str | None = None
        self._remember_queues(amqp_prefix)

    def _remember_queues(self, prefix: str) -> None:
        """Let the amqp_prefix fixture delete this service's queues afterwards."""
        from conftest import remember_queue

        delays = [float(d) for d in self.env["CRM_RETRY_DELAYS"].split(",") if d.strip()]
        queue = f"{prefix}{self.service}.events"
        for name in (queue, f"{queue}.dlq", *(f"{queue}.retry.{int(d * 1000)}ms" for d in delays)):
            remember_queue(prefix, name)

    def settings(self) -> Any:
        """The service's settings as its processes read them (for publishing, the DLQ)."""
        from shared.config import load_settings

        return load_settings(self.service, environ=self.env)

    def database(self) -> Any:
        """The service's database, for the test to count effects in (dispose() it after)."""
        app = importlib.import_module(f"services.{self.service}.app")
        return app.make_database(self.settings())

    def migrate(self) -> None:
        result = crm(self.env, self.service, "migrate")
        assert result.returncode == 0, result.stdout + result.stderr

    def log_path(self, part: str) -> Path:
        return self.data_dir / f"{self.service}-{part}.log"

    def log_text(self, part: str = "worker") -> str:
        path = self.log_path(part)
        return path.read_text(errors="replace") if path.exists() else ""

    def start_worker(self, amqp_url: str | None = None, database_url: str | None = None) -> None:
        """Start the worker (optionally through proxies) and wait until it consumes."""
        env = dict(self.env)
        if amqp_url:
            env["CRM_AMQP_URL"] = amqp_url
        if database_url:
            env[f"{self.service.upper()}_DATABASE_URL"] = database_url
        self._start("worker", [self.service, "worker"], env)
        self.wait_for_log('"consuming ')

    def start_api(self, amqp_url: str | None = None) -> str:
        """Start the api (gunicorn, one process) and wait until /health answers."""
        port = free_port()
        env = {**self.env, "CRM_BIND": f"127.0.0.1:{port}"}
        if amqp_url:
            env["CRM_AMQP_URL"] = amqp_url
        self._start("api", [self.service, "api"], env)
        self.api_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            self._check_running("api")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self.api_url
            time.sleep(0.2)
        raise AssertionError(f"{self.service} api never answered:\n{self.log_text('api')[-3000:]}")

    def _start(self, part: str, args: list[str], env: dict[str, str]) -> None:
        with self.log_path(part).open("ab") as output:
            self.processes[part] = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", *args],
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends its children too
            )

    def _check_running(self, part: str) -> None:
        process = self.processes[part]
        if process.poll() is not None:
            raise AssertionError(
                f"{self.service} {part} exited with {process.returncode}:\n"
                + self.log_text(part)[-3000:]
            )

    def wait_for_log(
        self, text: str, count: int = 1, part: str = "worker", timeout: float = START_SECONDS
    ) -> None:
        """Wait until `text` appears `count` times in a process's log (it must stay up)."""
        deadline = time.monotonic() + timeout
        while self.log_text(part).count(text) < count:
            self._check_running(part)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{text!r} x{count} never logged by {self.service} {part}:\n"
                    + self.log_text(part)[-3000:]
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM each process group, SIGKILL what is still there after a grace period."""
        stop_groups(self.processes.values(), grace_seconds=20)
        self.processes.clear()


@contextlib.contextmanager
def service_processes(*args: Any, **kwargs: Any) -> Iterator[ServiceProcesses]:
    """A migrated service; whatever the test starts is stopped when the block ends."""
    service = ServiceProcesses(*args, **kwargs)
    try:
        service.migrate()
        yield service
    finally:
        service.stop()


def publish_events(settings: Any, envelopes: list[Any]) -> None:
    """Publish envelopes straight to the service's events exchange, each confirmed."""
    from shared.deadletters import publish_raw

    for envelope in envelopes:
        publish_raw(settings, envelope.type, envelope.to_json())


def queue_depth(settings: Any, queue: str) -> int:
    """Messages ready in a queue (its dead letters, say), read on the real broker."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


class EventTap:
    """A queue of the test's own on the real broker, bound to some event types."""

    def __init__(self, settings: Any, *event_types: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(settings.exchange, exchange_type="topic", durable=True)
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        for event_type in event_types:
            self.channel.queue_bind(self.queue, settings.exchange, routing_key=event_type)
        self.seen: list[dict] = []

    def drain(self) -> list[dict]:
        """Everything published so far (accumulated in `seen`)."""
        while True:
            method, _properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return self.seen
            self.seen.append(json.loads(body))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()
