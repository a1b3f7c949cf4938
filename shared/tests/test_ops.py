"""shared.ops: /ready and /metrics only on the internal port when one is given; /ready cheap."""

from __future__ import annotations

import threading
import time

import pytest
from flask import Flask

from shared.config import load_settings
from shared.ops import Readiness, listener_port
from shared.web import init_app

SECRET = "shared-ops-tests-" + "s" * 40
PUBLIC = "http://127.0.0.1:8000"
INTERNAL = "http://127.0.0.1:8100"


def ops_app(ops_port: int | None) -> Flask:
    settings = load_settings("probe").with_overrides(jwt_secret=SECRET)
    app = Flask("probe")
    app.config["TESTING"] = True
    init_app(app, settings, None, dead_letters=False, ops_port=ops_port)
    return app


@pytest.mark.parametrize("path", ["/ready", "/metrics", "/metrics/"])
def test_with_an_internal_port_ready_and_metrics_are_404_on_any_other(path):
    client = ops_app(8100).test_client()

    public = client.get(path, base_url=PUBLIC, headers={"Host": "127.0.0.1:8100"})

    assert public.status_code == 404 and public.mimetype == "application/problem+json"
    assert client.get(path, base_url=INTERNAL).status_code == 200
    assert client.get("/health", base_url=PUBLIC).status_code == 200


class Connection:
    """A connection's socket as gunicorn hands it over: where it arrived."""

    def __init__(self, local: object) -> None:
        self.local = local

    def getsockname(self) -> object:
        return self.local


@pytest.mark.parametrize("local", [("127.0.0.1", 8000), "/run/crm/gateway.sock"])
def test_the_port_is_the_connections_own_not_one_the_request_names(local):
    client = ops_app(8100).test_client()
    spoofed = {"gunicorn.socket": Connection(local), "SERVER_PORT": "8100"}

    answer = client.get("/metrics", base_url=INTERNAL, environ_overrides=spoofed)

    assert answer.status_code == 404
    internal = {"gunicorn.socket": Connection(("127.0.0.1", 8100))}
    assert client.get("/metrics", base_url=PUBLIC, environ_overrides=internal).status_code == 200


def test_without_an_internal_port_a_service_answers_them_on_its_one_port():
    client = ops_app(None).test_client()

    assert client.get("/ready", base_url=PUBLIC).status_code == 200
    assert client.get("/metrics", base_url=PUBLIC).status_code == 200


def test_the_internal_port_is_read_from_a_bind_address():
    assert listener_port("127.0.0.1:8100") == 8100
    assert listener_port("[::]:9100") == 9100


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_readiness_runs_its_checks_once_per_period():
    runs = []
    clock = Clock()
    readiness = Readiness({"database": lambda: runs.append(1)}, ttl=2.0, clock=clock)

    for _ in range(50):
        assert readiness.results() == {"database": "ok"}
    clock.now += 1.9
    readiness.results()
    assert len(runs) == 1
    clock.now += 0.2
    readiness.results()
    assert len(runs) == 2


def test_probes_arriving_together_share_one_run_of_the_checks():
    runs = []

    def slow_check() -> None:
        runs.append(1)
        time.sleep(0.3)

    readiness = Readiness({"database": slow_check})
    answers = []
    threads = [
        threading.Thread(target=lambda: answers.append(readiness.results())) for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(runs) == 1 and answers == [{"database": "ok"}] * 20


def test_a_hanging_check_is_unavailable_after_the_timeout_not_a_hanging_probe():
    released = threading.Event()

    def hangs() -> None:
        released.wait(30)

    def fails() -> None:
        raise ConnectionRefusedError

    readiness = Readiness({"database": hangs, "broker": fails, "other": lambda: None}, timeout=0.3)
    started = time.monotonic()
    results = readiness.results()
    released.set()

    assert time.monotonic() - started < 2
    assert results == {"database": "unavailable", "broker": "unavailable", "other": "ok"}
