"""Webhooks: pattern matching, the fan-out, signed POSTs to a real local receiver, retries
with backoff, no redirects, auto-disable, replay, several workers, and the real broker."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from services.notifications import webhook_delivery, webhooks
from services.notifications.app import make_database
from services.notifications.models import Base, Webhook, WebhookDelivery
from services.notifications.webhook_delivery import BACKOFF, MAX_ATTEMPTS, deliver_due
from services.notifications.webhooks import on_any_event
from shared.bus import ALL_EVENTS
from shared.db import Database
from shared.deadletters import publish_raw
from shared.events import utcnow
from shared.testing import consuming_worker, make_event, outbox_events, wait_until

SECRET = "s3cret-for-the-tests-only-0123456789"

# --- a local receiver ----------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records requests and answers as scripted."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default: tuple[int, dict[str, str]] = (200, {})
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(self, request: Received) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.requests.append(request)
            return self.answers.pop(0) if self.answers else self.default

    def posts(self) -> list[Received]:
        with self.lock:
            return [request for request in self.requests if request.method == "POST"]


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            request = Received(self.command, self.path, dict(self.headers.items()), body)
            status, headers = receiver.answer(request)
            time.sleep(receiver.delay)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET = _serve

        def log_message(self, *_: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    # The default backlog (5) drops connections when several workers post at once, which
    # the senders then count as failed attempts: a receiver's flaw, not theirs.
    request_queue_size = 128


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = _Server(("127.0.0.1", 0), _handler_for(receiver))
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


# --- helpers -------------------------------------------------------------------------------


def opened_to_loopback(settings: Any) -> Any:
    """Settings under which webhooks may reach this machine (the receiver is on 127.0.0.1)."""
    extra = {**settings.extra, "webhook_allowed_networks": ("127.0.0.0/8", "::1/128")}
    return settings.with_overrides(http_timeout_seconds=2.0, extra=extra)


@pytest.fixture
def settings(app: Any) -> Any:
    return opened_to_loopback(app.extensions["crm.settings"])


def add_webhook(db: Database, url: str, patterns: list[str], **fields: Any) -> str:
    data = {"url": url, "event_types": patterns, "secret": SECRET, **fields}
    with db.session() as session:
        return webhooks.create_webhook(session, data).id


def fan_out(db: Database, envelope: Any) -> None:
    with db.session() as session:
        on_any_event(session, envelope)


def deliveries(db: Database, webhook_id: str | None = None) -> list[WebhookDelivery]:
    statement = sa.select(WebhookDelivery).order_by(WebhookDelivery.created_at)
    if webhook_id:
        statement = statement.where(WebhookDelivery.webhook_id == webhook_id)
    with db.session() as session:
        return list(session.scalars(statement))


def webhook(db: Database, webhook_id: str) -> Webhook:
    with db.session() as session:
        return session.get(Webhook, webhook_id)


def deal_won(**data: Any) -> Any:
    return make_event("deal.won", {"deal_id": "d-1", "amount": "1250.00", **data}, "sales")


def expected_signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def expected_timestamped_signature(timestamp: str, body: bytes) -> str:
    mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def fail_for_good(db: Database, settings: Any, start: Any) -> Any:
    """Run every attempt of the pending deliveries at its due time; the last moment."""
    moment = start
    deliver_due(db, settings, moment)
    for delay in BACKOFF:
        moment += delay
        deliver_due(db, settings, moment)
    return moment


# --- fan-out -------------------------------------------------------------------------------


def test_an_event_fans_out_to_each_active_webhook_taking_its_type(db):
    exact = add_webhook(db, "https://a.example.com/", ["deal.won"])
    add_webhook(db, "https://b.example.com/", ["ticket.*"])
    everything = add_webhook(db, "https://c.example.com/", ["*"])
    add_webhook(db, "https://d.example.com/", ["*"], active=False)
    event = deal_won()
    fan_out(db, event)
    made = deliveries(db)
    assert sorted(d.webhook_id for d in made) == sorted([exact, everything])
    for delivery in made:
        assert (delivery.event_id, delivery.event_type) == (event.id, "deal.won")
        assert delivery.payload == event.to_json() and delivery.status == "pending"
        assert json.loads(delivery.payload)["data"]["amount"] == "1250.00"


def test_the_same_event_fanned_out_twice_makes_one_delivery(db):
    add_webhook(db, "https://a.example.com/", ["deal.*"])
    event = deal_won()
    fan_out(db, event)
    fan_out(db, event)
    with db.session() as session:  # twice in one transaction too
        on_any_event(session, event)
        on_any_event(session, event)
    assert len(deliveries(db)) == 1


def test_events_nobody_subscribed_to_make_no_delivery(db):
    add_webhook(db, "https://a.example.com/", ["deal.won"])
    fan_out(db, make_event("contact.created", {"id": "c"}))
    assert deliveries(db) == []


# --- sending -------------------------------------------------------------------------------


def test_a_receiver_gets_the_event_correctly_signed(db, settings, receiver):
    hook = add_webhook(db, receiver.url, ["deal.won"])
    event = deal_won()
    fan_out(db, event)
    before = int(time.time())
    assert deliver_due(db, settings) == 1

    [post] = receiver.posts()
    delivery = deliveries(db)[0]
    assert post.path == "/hook" and post.body == event.to_json().encode()
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["X-CRM-Event"] == "deal.won"
    assert post.headers["X-CRM-Delivery"] == delivery.id
    timestamp = post.headers["X-CRM-Timestamp"]
    assert before <= int(timestamp) <= int(time.time())
    assert hmac.compare_digest(post.headers["X-CRM-Signature"], expected_signature(post.body))
    assert hmac.compare_digest(
        post.headers["X-CRM-Signature-Timestamped"],
        expected_timestamped_signature(timestamp, post.body),
    )
    assert json.loads(post.body)["id"] == event.id
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None
    assert deliver_due(db, settings) == 0
    assert webhook(db, hook).consecutive_failures == 0


def test_a_500_is_retried_after_the_backoff_and_then_delivered(db, settings, receiver):
    add_webhook(db, receiver.url, ["deal.won"])
    receiver.answers = [(500, {})]
    fan_out(db, deal_won())
    start = utcnow()
    assert deliver_due(db, settings, start) == 1
    delivery = deliveries(db)[0]
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    assert "HTTP 500" in delivery.last_error
    assert deliver_due(db, settings, start + BACKOFF[0] - timedelta(seconds=1)) == 0
    assert deliver_due(db, settings, start + BACKOFF[0]) == 1

    first, second = receiver.posts()
    assert first.body == second.body
    assert first.headers["X-CRM-Delivery"] == second.headers["X-CRM-Delivery"]
    assert [first.headers["X-CRM-Attempt"], second.headers["X-CRM-Attempt"]] == ["1", "2"]
    for post in (first, second):
        assert post.headers["X-CRM-Signature"] == expected_signature(post.body)
        timestamped = expected_timestamped_signature(post.headers["X-CRM-Timestamp"], post.body)
        assert post.headers["X-CRM-Signature-Timestamped"] == timestamped
    delivery = deliveries(db)[0]
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)
    assert delivery.last_error is None


def test_redirects_are_not_followed(db, settings, receiver):
    elsewhere = f"http://127.0.0.1:{receiver.port}/elsewhere"
    receiver.default = (307, {"Location": elsewhere})
    add_webhook(db, receiver.url, ["deal.won"])
    fan_out(db, deal_won())
    assert deliver_due(db, settings) == 1
    assert [(r.method, r.path) for r in receiver.requests] == [("POST", "/hook")]
    delivery = deliveries(db)[0]
    assert (delivery.status, delivery.last_status_code) == ("pending", 307)
    assert "not followed" in delivery.last_error and "/elsewhere" in delivery.last_error


def test_an_unreachable_or_slow_receiver_is_a_failed_attempt(db, settings, receiver):
    receiver.delay = 1.0
    add_webhook(db, "http://127.0.0.1:9/closed", ["deal.won"])
    add_webhook(db, receiver.url, ["deal.won"])
    fan_out(db, deal_won())
    hurried = settings.with_overrides(http_timeout_seconds=0.3)
    assert deliver_due(db, hurried) == 2
    for delivery in deliveries(db):
        assert (delivery.status, delivery.attempts) == ("pending", 1)
        assert delivery.last_status_code is None and delivery.last_error


def test_a_delivery_fails_for_good_after_its_last_attempt(db, settings, receiver):
    hook = add_webhook(db, receiver.url, ["deal.won"])
    receiver.default = (503, {})
    fan_out(db, deal_won())
    last = fail_for_good(db, settings, utcnow())
    assert len(receiver.posts()) == MAX_ATTEMPTS == 6
    delivery = deliveries(db)[0]
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 6, 503)
    assert delivery.next_attempt_at is None
    assert deliver_due(db, settings, last + timedelta(days=1)) == 0
    assert (webhook(db, hook).consecutive_failures, webhook(db, hook).active) == (1, True)


def test_a_webhook_is_disabled_after_five_failed_deliveries_in_a_row(db, settings, receiver):
    hook = add_webhook(db, receiver.url, ["deal.*"])
    receiver.default = (500, {})
    for _ in range(5):
        fan_out(db, deal_won())
    fail_for_good(db, settings, utcnow())
    disabled = webhook(db, hook)
    assert (disabled.active, disabled.consecutive_failures) == (False, 5)
    assert disabled.disabled_at is not None
    [(_, data)] = outbox_events(db, "webhook.disabled")
    assert data["webhook_id"] == hook and data["consecutive_failures"] == 5
    fan_out(db, deal_won())  # a disabled webhook takes no new events
    assert len(deliveries(db)) == 5


def test_a_delivered_one_starts_the_failure_count_over(db, settings, receiver):
    hook = add_webhook(db, receiver.url, ["deal.*"])
    with db.session() as session:
        session.get(Webhook, hook).consecutive_failures = 4
    fan_out(db, deal_won())
    deliver_due(db, settings)
    assert (webhook(db, hook).consecutive_failures, webhook(db, hook).active) == (0, True)


def test_a_failed_delivery_replayed_is_sent_again(db, settings, receiver):
    add_webhook(db, receiver.url, ["deal.won"])
    receiver.default = (500, {})
    fan_out(db, deal_won())
    fail_for_good(db, settings, utcnow())
    delivery = deliveries(db)[0]
    assert delivery.status == "failed"
    receiver.default = (204, {})
    with db.session() as session:
        replayed = webhooks.replay_delivery(session, session.get(WebhookDelivery, delivery.id))
        assert (replayed.status, replayed.attempts) == ("pending", 0)
    assert deliver_due(db, settings) == 1
    delivery = deliveries(db)[0]
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 204)
    assert len(receiver.posts()) == MAX_ATTEMPTS + 1


def test_a_disabled_webhooks_deliveries_wait_until_it_is_enabled(db, settings, receiver):
    hook = add_webhook(db, receiver.url, ["deal.won"])
    fan_out(db, deal_won())
    with db.session() as session:
        webhooks.update_webhook(session, session.get(Webhook, hook), {"active": False})
    assert deliver_due(db, settings) == 0
    with db.session() as session:
        webhooks.update_webhook(session, session.get(Webhook, hook), {"active": True})
    assert deliver_due(db, settings) == 1
    assert deliveries(db)[0].status == "delivered"


def test_the_signature_is_over_the_body_and_the_timestamped_one_over_both():
    expected = hmac.new(b"k", b"{}", hashlib.sha256).hexdigest()
    assert webhook_delivery.signature("k", b"{}") == f"sha256={expected}"
    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert webhook_delivery.timestamped_signature("k", 1700000000, b"{}") == f"sha256={expected}"


# --- several workers -----------------------------------------------------------------------


def _deliver_in_thread(url, settings, barrier, results, errors) -> None:
    database = Database("notifications", url, Base.metadata)
    try:
        barrier.wait(timeout=30)
        results.append(deliver_due(database, settings, batch=7))
    except Exception as error:  # reported by the test
        errors.append(error)
    finally:
        database.dispose()


def test_concurrent_workers_send_each_delivery_once(db, settings, receiver):
    add_webhook(db, receiver.url, ["deal.won"])
    add_webhook(db, receiver.url, ["*"])
    for _ in range(20):
        fan_out(db, deal_won())
    url = db.engine.url.render_as_string(hide_password=False)
    barrier, results, errors = threading.Barrier(4), [], []
    threads = [
        threading.Thread(target=_deliver_in_thread, args=(url, settings, barrier, results, errors))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and sum(results) == 40
    sent = Counter(post.headers["X-CRM-Delivery"] for post in receiver.posts())
    assert len(sent) == 40 and set(sent.values()) == {1}
    assert {d.status for d in deliveries(db)} == {"delivered"}


def test_a_claim_skips_a_delivery_another_transaction_holds(db, settings, receiver):
    if not db.is_postgres:
        pytest.skip("row locks are PostgreSQL's; SQLite runs one writer at a time")
    add_webhook(db, receiver.url, ["deal.won"])
    fan_out(db, deal_won())
    fan_out(db, deal_won())
    held, free = (d.id for d in deliveries(db))
    with db.engine.connect() as connection, connection.begin():
        connection.execute(
            sa.select(WebhookDelivery.id).where(WebhookDelivery.id == held).with_for_update()
        )
        assert deliver_due(db, settings) == 1  # did not wait for the lock
        assert [post.headers["X-CRM-Delivery"] for post in receiver.posts()] == [free]
    assert deliver_due(db, settings) == 1


# --- through the real broker ---------------------------------------------------------------


@pytest.fixture
def running_worker(make_settings, database_url):
    settings = make_settings("notifications", database_url=database_url)
    database = make_database(settings)
    database.create_all()
    with consuming_worker(settings, database, {ALL_EVENTS: on_any_event}):
        yield settings, database
    database.dispose()


def test_an_event_from_the_broker_becomes_a_signed_post(running_worker, receiver):
    settings, database = running_worker
    add_webhook(database, receiver.url, ["deal.*"])
    add_webhook(database, f"http://127.0.0.1:{receiver.port}/marker", ["ticket.created"])
    event = deal_won()
    publish_raw(settings, "deal.won", event.to_json())
    publish_raw(settings, "deal.won", event.to_json())  # redelivered: still one delivery
    publish_raw(settings, "ticket.created", make_event("ticket.created", {"id": "t"}).to_json())
    wait_until(lambda: len(deliveries(database)) == 2, 15, "for the deliveries")
    assert sorted(d.event_type for d in deliveries(database)) == ["deal.won", "ticket.created"]
    assert deliver_due(database, opened_to_loopback(settings)) == 2
    [post] = [post for post in receiver.posts() if post.path == "/hook"]
    assert post.body == event.to_json().encode()
    assert post.headers["X-CRM-Signature"] == expected_signature(post.body)
