"""The event trust boundary on the real broker: per-service users with topic permissions.

A vhost of this test's own gets one user per service, made by `rabbitmqctl
import_definitions` of `shared.broker_users.rabbitmq_definitions` (the permissions
Compose and Kubernetes give), and removed after. The services' real topology runs under
those users; a service publishing another's routing key is refused by the broker; an
event smuggled under a key its publisher may send is dead-lettered by the consumer.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
from sqlalchemy.orm import Session

from conftest import running_in_ci
from services.sales.handlers import handlers as sales_handlers
from shared.broker_users import rabbitmq_definitions
from shared.bus import ALL_EVENTS, EventConsumer, prepare_queues
from shared.config import Settings, load_settings
from shared.db import Database
from shared.deadletters import list_dead_letters, publish_raw
from shared.events import Envelope
from shared.testing import TEST_JWT_SECRET, make_event, wait_until
from shared.tests.test_bus import count, counters_metadata, increment

SOURCES = ("contacts", "sales", "marketing", "notifications")


def rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"rabbitmqctl {args[0]}: {done.stdout} {done.stderr}"


@pytest.fixture(scope="module")
def broker_users(amqp_url: str) -> Iterator[dict]:
    """{source: its own AMQP URL} in a fresh vhost; vhost and users deleted after."""
    if shutil.which("rabbitmqctl") is None:
        if running_in_ci():
            pytest.fail("rabbitmqctl is needed to make the broker users", pytrace=False)
        pytest.skip("rabbitmqctl is not installed")
    vhost = f"crm-test-{uuid.uuid4().hex[:8]}"
    users = {source: (f"{vhost}.{source}", secrets.token_urlsafe(16)) for source in SOURCES}
    # One call makes vhost, users and permissions. rabbitmqctl runs as its own user (and
    # 3.10 reads no stdin): a file it may read, of test-only passwords, deleted at once.
    handle, path = tempfile.mkstemp(suffix=".json")
    try:
        os.write(handle, json.dumps(rabbitmq_definitions(vhost, users)).encode())
        os.close(handle)
        os.chmod(path, 0o644)
        rabbitmqctl("import_definitions", path)
    finally:
        os.unlink(path)
    host = amqp_url.split("@", 1)[1].split("/", 1)[0]
    try:
        yield {
            source: f"amqp://{name}:{password}@{host}/{vhost}"
            for source, (name, password) in users.items()
        }
    finally:
        names = ", ".join(f'<<"{name}">>' for name, _ in users.values())
        rabbitmqctl(  # one call for every user: each rabbitmqctl run costs seconds
            "eval",
            f'[rabbit_auth_backend_internal:delete_user(U, <<"crm-tests">>) || U <- [{names}]].',
        )
        rabbitmqctl("delete_vhost", vhost)


def settings_of(source: str, broker_users: dict, tmp_path: Path) -> Settings:
    environ = {"CRM_DATA_DIR": str(tmp_path), "CRM_JWT_SECRET": TEST_JWT_SECRET}
    environ[f"{source.upper()}_AMQP_URL"] = broker_users[source]
    return load_settings(source, environ=environ).with_overrides(retry_delays=(0.2,))


class Running:
    """A consumer in a thread under a service's own broker user, on its own database."""

    def __init__(self, settings: Settings, tmp_path: Path, handlers: dict) -> None:
        url = f"sqlite:///{tmp_path / (settings.service + '.db')}"
        self.db = Database(settings.service, url, counters_metadata())
        self.db.create_all()
        self.consumer = EventConsumer(settings, self.db, handlers, poll_seconds=0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        assert self.consumer.consuming.wait(15), "the consumer never connected"
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        self.db.dispose()


def erasure(name: str, **changes: str) -> bytes:
    envelope = make_event("contact.erased", {"id": str(uuid.uuid4()), "name": name})
    return json.dumps({**envelope.to_dict(), **changes}).encode()


def test_a_service_may_not_publish_another_services_routing_key(
    broker_users: dict, tmp_path: Path
) -> None:
    sales = settings_of("sales", broker_users, tmp_path)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        publish_raw(sales, "contact.erased", erasure("forged by sales", source="sales"))
    assert refused.value.reply_code == 403
    assert "ACCESS_REFUSED" in refused.value.reply_text
    publish_raw(sales, "deal.won", make_event("deal.won", {}).to_json())  # its own: accepted


def test_the_real_topology_runs_and_a_smuggled_event_is_dead_lettered(
    broker_users: dict, tmp_path: Path
) -> None:
    contacts = settings_of("contacts", broker_users, tmp_path)
    marketing = settings_of("marketing", broker_users, tmp_path)
    sales = settings_of("sales", broker_users, tmp_path)
    notifications = settings_of("notifications", broker_users, tmp_path)
    prepare_queues(sales, sales_handlers())  # as `crm sales migrate` does, as sales' user
    failed_once: list[str] = []

    def flaky(session: Session, envelope: Envelope) -> None:
        if not failed_once:  # a retry goes through the default exchange: allowed too
            failed_once.append(envelope.id)
            raise ConnectionError("a moment")
        increment(session, envelope)

    with (
        Running(sales, tmp_path, {"contact.erased": increment}) as at_sales,
        Running(notifications, tmp_path, {ALL_EVENTS: flaky}) as at_notifications,
    ):
        # marketing may publish email.requested: under that key, it sends an erasure
        # claiming to come from contacts. Notifications (bound to every key) gets it.
        smuggled = erasure("smuggled", source="contacts")
        publish_raw(marketing, "email.requested", smuggled)
        publish_raw(contacts, "contact.erased", erasure("genuine"))
        wait_until(lambda: count(at_sales.db, "genuine") == 1, 20, "sales applies the erasure")
        wait_until(lambda: count(at_notifications.db, "genuine") == 1, 20, "after a retry")
        wait_until(lambda: len(list_dead_letters(notifications)) == 1, 20, "the dead letter")
    assert failed_once and count(at_notifications.db, "smuggled") == 0
    (letter,) = list_dead_letters(notifications)
    assert letter.reason == "forbidden_source"
    assert "routing key 'email.requested'" in (letter.error or "")
    assert list_dead_letters(sales) == []
