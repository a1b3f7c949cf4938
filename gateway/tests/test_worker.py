"""The gateway worker: consumes nothing, relays `user.*` events to the broker."""

from __future__ import annotations

import json
from collections.abc import Callable

import pika
import pytest

from gateway import domain
from gateway.handlers import handlers
from gateway.tests.conftest import FAST_HASHER
from shared.config import Settings
from shared.testing import wait_until
from shared.worker import ServiceWorker


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings("gateway")


@pytest.fixture
def user_events(settings: Settings):
    """A queue of the test's own bound to `user.*` on the test's exchange."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    channel.exchange_declare(settings.exchange, exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, settings.exchange, routing_key="user.*")
    seen: list[dict] = []

    def received() -> list[dict]:
        while (message := channel.basic_get(queue, auto_ack=True))[0] is not None:
            seen.append(json.loads(message[2]))
        return seen

    yield received
    connection.close()


def test_the_gateway_worker_relays_user_events_and_stops_cleanly(app, settings, user_events):
    db = app.extensions["crm.db"]
    worker = ServiceWorker(settings, db, handlers())
    thread = worker.start()
    try:
        with db.session() as session:
            user = domain.create_user(
                session, FAST_HASHER, {"email": "sam@example.com", "role": "sales", "password": "x"}
            )
        with db.session() as session:
            domain.update_user(session, FAST_HASHER, user.id, {"role": "support"})

        wait_until(lambda: len(user_events()) == 3, what="three user events")
    finally:
        worker.stop()
        thread.join(timeout=15)
    assert not thread.is_alive()
    events = user_events()
    assert [(e["type"], e["source"]) for e in events] == [
        ("user.created", "gateway"),  # the bootstrap admin
        ("user.created", "gateway"),
        ("user.updated", "gateway"),
    ]
    assert [(e["aggregate_id"], e["aggregate_version"]) for e in events[1:]] == [
        (user.id, 1),
        (user.id, 2),
    ]
    assert not worker.consumer.consuming.is_set()
