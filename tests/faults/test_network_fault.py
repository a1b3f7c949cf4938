"""A network fault between a worker and the broker: dropped and stalled connections.

The contacts worker (and api) reach RabbitMQ only through a TCP proxy the test controls;
the test publishes to, and watches, the real broker. However the link breaks, the worker
reconnects and resumes: every event's effect is in its database exactly once, and every
write its api took during the fault is published once the link is back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
import sqlalchemy as sa

from shared.testing import make_event
from tests.crm_run import eventually
from tests.faults.single_worker import (
    EventTap,
    ServiceProcesses,
    publish_events,
    service_processes,
)
from tests.faults.tcp_proxy import TcpProxy

pytestmark = pytest.mark.faults

# A short heartbeat, so both the worker and RabbitMQ give up on a stalled link in seconds.
HEARTBEAT_SECONDS = 2
# Long enough for RabbitMQ to miss two heartbeats and close its side of a stalled link.
STALL_SECONDS = 5 * HEARTBEAT_SECONDS
APPLY_SECONDS = 90  # generous: a loaded machine, reconnect backoff, broker redelivery


@pytest.fixture
def broker_proxy(amqp_url: str) -> Iterator[TcpProxy]:
    parts = urlsplit(amqp_url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as proxy:
        yield proxy


def through(proxy: TcpProxy, amqp_url: str) -> str:
    """The broker URL by way of the proxy, with a short heartbeat."""
    parts = urlsplit(amqp_url)
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(netloc=netloc, query=f"{query}heartbeat={HEARTBEAT_SECONDS}"))


@pytest.fixture
def contacts(tmp_path: Path, amqp_url: str, amqp_prefix: str) -> Iterator[ServiceProcesses]:
    with service_processes("contacts", tmp_path / "var", amqp_url, amqp_prefix) as service:
        yield service


class LeadConversions:
    """`lead.converted` events as sales publishes them, each naming a new contact."""

    def __init__(self, settings, db) -> None:
        self.settings, self.db = settings, db  # the real broker; the contacts database
        self.sent: list = []

    def publish(self, count: int) -> None:
        events = [self._conversion() for _ in range(count)]
        publish_events(self.settings, events)
        self.sent.extend(events)

    @staticmethod
    def _conversion():
        contact_id = str(uuid.uuid4())
        data = {
            "contact_id": contact_id,
            "lead_id": str(uuid.uuid4()),
            "first_name": "Grace",
            "last_name": contact_id[:8],
            "email": f"{contact_id}@example.com",
        }
        return make_event("lead.converted", data, source="sales")

    def effects(self) -> dict[str, tuple[int, int]]:
        """Per contact id: (contacts rows, lead.converted timeline entries)."""
        with self.db.engine.connect() as connection:
            contacts = connection.execute(
                sa.text("SELECT id, count(*) FROM contacts GROUP BY id")
            ).all()
            entries = dict(
                connection.execute(
                    sa.text(
                        "SELECT contact_id, count(*) FROM interactions "
                        "WHERE event_type = 'lead.converted' GROUP BY contact_id"
                    )
                ).all()
            )
        return {contact_id: (rows, entries.get(contact_id, 0)) for contact_id, rows in contacts}

    def applied(self) -> int:
        return len(self.effects())

    def assert_each_applied_once(self) -> None:
        effects = self.effects()
        assert set(effects) == {event.data["contact_id"] for event in self.sent}
        assert set(effects.values()) == {(1, 1)}  # one contact, one timeline entry each
        with self.db.engine.connect() as connection:
            inbox = connection.execute(sa.text("SELECT count(*) FROM inbox")).scalar_one()
        assert inbox == len(self.sent)


def test_worker_reconnects_after_a_dropped_and_a_stalled_link_and_applies_each_event_once(
    broker_proxy: TcpProxy, contacts: ServiceProcesses, amqp_url: str
) -> None:
    contacts.start_worker(amqp_url=through(broker_proxy, amqp_url))
    conversions = LeadConversions(contacts.settings(), contacts.database())
    try:
        conversions.publish(10)
        eventually(
            lambda: conversions.applied() == 10, timeout=APPLY_SECONDS, what="the first events"
        )

        broker_proxy.drop()
        conversions.publish(10)  # queued by the broker while the worker cannot reach it
        time.sleep(2)
        assert conversions.applied() == 10
        broker_proxy.restore()
        eventually(
            lambda: conversions.applied() == 20, timeout=APPLY_SECONDS, what="events after the drop"
        )
        contacts.wait_for_log("consumer lost the broker")
        contacts.wait_for_log('"consuming ', count=2)

        broker_proxy.stall()
        conversions.publish(10)
        time.sleep(STALL_SECONDS)
        broker_proxy.restore()
        conversions.publish(10)
        eventually(
            lambda: conversions.applied() == 40,
            timeout=APPLY_SECONDS,
            what="events after the stall",
        )
        contacts.wait_for_log('"consuming ', count=3)  # RabbitMQ gave up on the stalled link

        conversions.assert_each_applied_once()
    finally:
        conversions.db.dispose()


def test_writes_taken_during_the_fault_are_published_once_the_link_is_back(
    broker_proxy: TcpProxy, contacts: ServiceProcesses, amqp_url: str
) -> None:
    settings = contacts.settings()
    tap = EventTap(settings, "contact.created")
    try:
        contacts.start_worker(amqp_url=through(broker_proxy, amqp_url))
        writer = ContactWriter(contacts.start_api(through(broker_proxy, amqp_url)), settings)

        before = [writer.create("before")]
        eventually(
            lambda: set(before) <= set(published(tap)), timeout=APPLY_SECONDS, what="relay working"
        )

        broker_proxy.drop()
        dropped = [writer.create("dropped") for _ in range(5)]  # the api only writes its outbox
        time.sleep(2)
        assert not set(dropped) & set(published(tap))  # nothing can get through meanwhile
        broker_proxy.stall()
        stalled = [writer.create("stalled") for _ in range(5)]
        time.sleep(STALL_SECONDS)
        assert not set(stalled) & set(published(tap))
        broker_proxy.restore()

        everything = set(before + dropped + stalled)
        eventually(
            lambda: everything <= set(published(tap)), timeout=APPLY_SECONDS, what="the outbox sent"
        )
        events = published(tap)
        assert set(events) == everything
        assert all(len(ids) == 1 for ids in events.values())  # one event per write
    finally:
        tap.close()


class ContactWriter:
    """Creates contacts through the contacts api, as an admin."""

    def __init__(self, api: str, settings) -> None:
        from shared.auth import Principal, issue_service_token

        # Straight to the service: the token the gateway would forward.
        token = issue_service_token(settings, Principal(str(uuid.uuid4()), "admin"))
        self.api, self.session = api, requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def create(self, label: str) -> str:
        email = f"{label}-{uuid.uuid4().hex[:8]}@example.com"
        answer = self.session.post(
            f"{self.api}/api/v1/contacts", json={"first_name": label, "email": email}, timeout=10
        )
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]


def published(tap: EventTap) -> dict[str, set[str]]:
    """Per contact id: the ids of the contact.created events seen so far."""
    events: dict[str, set[str]] = {}
    for event in tap.drain():
        events.setdefault(event["aggregate_id"], set()).add(event["id"])
    return events
