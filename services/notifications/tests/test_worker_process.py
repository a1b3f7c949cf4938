"""The notifications worker as a real process: killed with SIGKILL in the middle of a send."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.notifications.app import make_database
from services.notifications.handlers import handlers
from services.notifications.models import Message
from services.notifications.outcomes import SENDING_LEASE
from services.notifications.sender import send_due
from services.notifications.sending import derived_message_id
from shared.bus import prepare_queues
from shared.deadletters import publish_raw
from shared.events import utcnow
from shared.testing import make_event, outbox_events, wait_until

ROOT = Path(__file__).resolve().parents[3]


class WorkerProcess:
    """`python -m services.notifications.worker`, with the test's database, broker and SMTP."""

    def __init__(self, settings: Any, smtp_url: str, log: Path) -> None:
        self.env = {
            **os.environ,
            "NOTIFICATIONS_DATABASE_URL": settings.database_url,
            "CRM_AMQP_URL": settings.amqp_url,
            "CRM_AMQP_PREFIX": settings.amqp_prefix,
            "CRM_DATA_DIR": str(settings.data_dir),
            "CRM_SMTP_URL": smtp_url,
            "CRM_NOTIFICATIONS_TICK_SECONDS": "0.1",
            "CRM_RETRY_DELAYS": "0.2,0.5",
        }
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.notifications.worker"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no outcome written, as in a power loss or an OOM kill."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def service(make_settings, database_url, tmp_path) -> Iterator[tuple[Any, Any]]:
    settings = make_settings("notifications", database_url=database_url)
    db = make_database(settings)
    db.create_all()
    prepare_queues(settings, handlers(settings))  # the queue is there before the first publish
    yield settings, db
    db.dispose()


def request(to: str, subject: str) -> Any:
    return make_event("email.requested", {"to": to, "subject": subject, "body_text": "x"})


def status_of(db: Any, message_id: str) -> str | None:
    with db.session() as session:
        message = session.get(Message, message_id)
        return message.status if message else None


def test_a_worker_process_killed_mid_send_never_sends_that_email_twice(
    service, smtp_server, tmp_path
):
    settings, db = service
    asked = request("ada@example.com", "Once only")
    message_id = derived_message_id(asked, "ada@example.com")
    smtp_server.stall_next(1)  # the server takes the message and never says so
    first = WorkerProcess(settings, smtp_server.url, tmp_path / "worker.log").start()
    try:
        publish_raw(settings, "email.requested", asked.to_json())
        smtp_server.wait_for(1, timeout=30)
        assert status_of(db, message_id) == "sending"
        first.kill()  # between the SMTP server's accepting and the log's update
    finally:
        first.stop()

    second = WorkerProcess(settings, smtp_server.url, tmp_path / "worker.log").start()
    try:
        publish_raw(settings, "email.requested", asked.to_json())  # the broker redelivers too
        marker = request("marker@example.com", "After")
        publish_raw(settings, "email.requested", marker.to_json())
        marker_id = derived_message_id(marker, "marker@example.com")
        # Settled first: the clock moved past the lease below would take it for interrupted.
        wait_until(lambda: status_of(db, marker_id) == "sent", 30, "for the marker")
        assert status_of(db, message_id) == "sending"  # in doubt: not tried again
        # Once its lease is over, the interrupted attempt is settled without a resend.
        send_due(db, settings, now=utcnow() + SENDING_LEASE + timedelta(seconds=1))
    finally:
        second.stop()
    assert [item.rcpt_tos for item in smtp_server.received] == [
        ["ada@example.com"],
        ["marker@example.com"],
    ]
    assert status_of(db, message_id) == "failed"
    [(_, failed)] = outbox_events(db, "email.failed")
    assert failed["message_id"] == message_id and failed["uncertain"] is True
