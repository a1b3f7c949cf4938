"""A worker process stops gracefully on SIGTERM: the message in hand is finished and acked.

A real process (`run_worker`, as `crm <service> worker` runs it) with a handler that takes
a second; SIGTERM lands while it runs. The handler's effect must commit exactly once, the
message must be acked (nothing left in the queue for another consumer), the connections
closed and the process gone with status 0 well within the Kubernetes grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pika
import sqlalchemy as sa

from shared.bus import prepare_queues
from shared.config import Settings
from shared.db import Database
from shared.deadletters import publish_raw
from shared.events import Envelope
from shared.testing import wait_until
from tests.sigterm_worker import SERVICE, SLOW, metadata

ROOT = Path(__file__).resolve().parents[1]
STOP_WITHIN_SECONDS = 10  # the workers' terminationGracePeriodSeconds is longer


def queue_state(settings: Settings) -> tuple[int, int]:
    """(ready messages, consumers) of the service queue."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        method = connection.channel().queue_declare(settings.queue, passive=True).method
        return method.message_count, method.consumer_count
    finally:
        connection.close()


def effects(db: Database) -> list[str]:
    table = db.metadata.tables["effects"]
    with db.session() as session:
        return list(session.scalars(sa.select(table.c.event_id)))


def test_sigterm_finishes_the_message_in_hand_acks_it_and_exits_0(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(SERVICE)
    url = f"sqlite:///{tmp_path / 'sigterm.db'}"
    db = Database(SERVICE, url, metadata())
    db.create_all()
    prepare_queues(settings, [SLOW])
    event = Envelope(SLOW, "contacts", "a1", {})
    publish_raw(settings, SLOW, event.to_json())
    calls = tmp_path / "calls"
    env = {
        **os.environ,
        "CRM_DATA_DIR": str(tmp_path),
        "CRM_AMQP_URL": settings.amqp_url,
        "CRM_AMQP_PREFIX": settings.amqp_prefix,
        "CRM_RETRY_DELAYS": ",".join(str(delay) for delay in settings.retry_delays),
        "CRM_RELAY_IDLE_SECONDS": "0.05",
        f"{SERVICE.upper()}_DATABASE_URL": url,
        f"CRM_{SERVICE.upper()}_WORKER_METRICS_PORT": "0",  # no metrics endpoint here
        "SIGTERMTEST_CALLS": str(calls),
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.sigterm_worker"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: calls.exists() and calls.read_text().strip() != "", timeout=30)
        assert effects(db) == [], "the handler should still be running"
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        returncode = process.wait(timeout=STOP_WITHIN_SECONDS + 5)
        stopped_after = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output_text = log.read_text(errors="replace")
    assert returncode == 0, output_text
    assert stopped_after < STOP_WITHIN_SECONDS, output_text
    assert "received SIGTERM" in output_text and "worker stopped" in output_text
    assert effects(db) == [event.id]  # committed, once
    assert calls.read_text().split() == [event.id]  # handled once, never redelivered
    time.sleep(1)  # an unacked message would be back in the queue by now
    assert queue_state(settings) == (0, 0)  # acked, and the consumer's connection closed
    db.dispose()


def test_the_api_gunicorn_config_has_a_graceful_timeout(tmp_path: Path) -> None:
    """gunicorn finishes in-flight requests for `graceful_timeout` seconds after SIGTERM.

    20 s by default: what deploy/k8s's grace period (35 s, after a 5 s preStop pause) and
    tests/test_deploy_k8s.py count on. Read in a child process: the config sets
    PROMETHEUS_MULTIPROC_DIR, which must not leak into this test process.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUNICORN_")}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    script = (
        "import runpy, sys; c = runpy.run_path(sys.argv[1]); "
        "print(c['graceful_timeout'], c['timeout'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "deploy/gunicorn.conf.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    graceful_timeout, timeout = (int(part) for part in result.stdout.split())
    assert graceful_timeout == 20
    assert timeout >= graceful_timeout
