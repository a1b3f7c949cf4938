"""Sending webhook deliveries: claim, sign, POST, record; retries with backoff; auto-disable.

`deliver_due` (a worker timer) works in three steps so no transaction is open while a
receiver is slow:
1. claim: one UPDATE takes pending deliveries that are due (of active webhooks), their
   candidate rows chosen with `SELECT ... FOR UPDATE SKIP LOCKED`, so worker replicas take
   disjoint rows (SQLite's write lock serialises them instead). The claim counts the
   attempt and pushes `next_attempt_at` out by a lease, and commits: if the worker dies,
   the delivery is tried again when the lease runs out (at least once, never lost).
2. POST the payload to the webhook's URL, a few at a time, with a timeout and without
   following redirects (a 3xx is a failed attempt: we only ever send to the URL configured).
3. record each outcome: 2xx delivered; otherwise the next attempt after 10 s, 1 min,
   5 min, 30 min, 2 h; after the sixth failed attempt the delivery is `failed` (kept, and
   replayable from the API). A webhook whose last 5 deliveries failed in a row is disabled
   (`active` false, `disabled_at`, a `webhook.disabled` event); a delivered one resets
   the count.

What a receiver gets, and how it verifies it::

    POST <url>
    Content-Type: application/json
    X-CRM-Event: deal.won                    the event type
    X-CRM-Delivery: <delivery id>            the same on every attempt of one delivery
    X-CRM-Attempt: 1
    X-CRM-Timestamp: 1767225600              unix seconds when this attempt was signed
    X-CRM-Signature: sha256=<hex>            HMAC-SHA256 of the body (API.md)
    X-CRM-Signature-Timestamped: sha256=<hex>  HMAC-SHA256 of "<timestamp>.<body>"

    <the event envelope as JSON: id, type, occurred_at, data, ...>

    expected = "sha256=" + hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(expected, request.headers["X-CRM-Signature"])

A receiver that also wants to refuse replays of old requests checks the timestamped one:

    signed = timestamp.encode() + b"." + raw_body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(expected, request.headers["X-CRM-Signature-Timestamped"])
    fresh = abs(time.time() - int(timestamp)) <= 300

Compute the HMAC over the raw body bytes, before parsing the JSON. Delivery is at least
once and may reorder across retries: deduplicate by `X-CRM-Delivery` (or the envelope's
`id`) and order by `occurred_at` / `aggregate_version`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.notifications import webhook_transport, webhooks
from services.notifications.models import Webhook, WebhookDelivery
from shared.config import Settings
from shared.db import Database, no_lock_wait, take_write_lock
from shared.events import isoformat, utcnow
from shared.outbox import record_event
from shared.worker import Timer

log = logging.getLogger(__name__)

# Waits after the 1st, 2nd... failed attempt; after the last attempt the delivery fails.
BACKOFF = (
    timedelta(seconds=10),
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
)
MAX_ATTEMPTS = len(BACKOFF) + 1
DISABLE_AFTER = 5  # failed deliveries in a row
# A claimed attempt not recorded within this time (the worker died) is tried again.
LEASE = timedelta(minutes=5)
SEND_THREADS = 8
# One call keeps claiming full batches for at most this long (other timers wait meanwhile).
TIME_BUDGET_SECONDS = 10.0
MAX_ERROR_CHARS = 2000
USER_AGENT = "crm-webhooks/1"


@dataclass(frozen=True)
class Claim:
    """A delivery attempt taken by this worker: what to send, and where."""

    delivery_id: str
    webhook_id: str
    url: str
    secret: str
    event_type: str
    payload: str
    attempts: int


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: the receiver's status code, or why there was none."""

    status_code: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        """A 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex>`: the HMAC-SHA256 of the body keyed by the secret (API.md's signature)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def timestamped_signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """`sha256=<hex>`: the HMAC-SHA256 of `<timestamp>.<body>`, so old requests can be refused."""
    return signature(secret, str(timestamp).encode() + b"." + body)


def signed_headers(claim: Claim, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers of one attempt, the signature among them."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-CRM-Event": claim.event_type,
        "X-CRM-Delivery": claim.delivery_id,
        "X-CRM-Attempt": str(claim.attempts),
        "X-CRM-Timestamp": str(timestamp),
        "X-CRM-Signature": signature(claim.secret, body),
        "X-CRM-Signature-Timestamped": timestamped_signature(claim.secret, timestamp, body),
    }


def _failure(response: requests.Response) -> str:
    if response.is_redirect or 300 <= response.status_code < 400:
        location = response.headers.get("Location", "")[:500]
        return f"HTTP {response.status_code}: redirect to {location!r} not followed"
    return f"HTTP {response.status_code} {response.reason or ''}".strip()


def post_delivery(
    claim: Claim, timeout: float, allowed: tuple[Any, ...] = (), verify: bool | str = True
) -> Outcome:
    """POST one attempt; never raises (a failure is an outcome to record).

    `allowed`: the networks webhooks may reach besides public ones
    (CRM_WEBHOOK_ALLOWED_NETWORKS). `verify`: True, or a CA bundle's path (tests).
    """
    body = claim.payload.encode()
    headers = signed_headers(claim, body, int(time.time()))
    try:
        # Names are looked up again each time (one may have been pointed inside since), once:
        # the connection goes to the address checked, whatever a second lookup would say.
        host = urlsplit(claim.url).hostname or ""
        try:
            address = webhook_transport.checked_address(host, allowed)
        except webhook_transport.RefusedHost as refused:
            return Outcome(None, f"not sent: {refused}")
        # stream=True: the status is all we need; a huge answer is never read.
        with (
            webhook_transport.pinned_session(address) as session,
            session.post(
                claim.url,
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                stream=True,
                verify=verify,
            ) as response,
        ):
            if 200 <= response.status_code < 300:
                return Outcome(response.status_code)
            return Outcome(response.status_code, _failure(response))
    except requests.Timeout:
        return Outcome(None, f"no answer within {timeout:g} s")
    except requests.RequestException as error:
        return Outcome(None, f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS])
    except Exception as error:  # a sender must record a failure, not crash the worker
        log.exception("webhook delivery %s failed unexpectedly", claim.delivery_id)
        return Outcome(None, f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS])


def claim_due(session: Session, now: datetime, limit: int) -> list[Claim]:
    """Take up to `limit` due pending deliveries of active webhooks (oldest due first).

    The due rows are locked and listed first, then leased by id: an `IN (SELECT ... LIMIT n
    FOR UPDATE SKIP LOCKED)` inside the UPDATE may be re-run by PostgreSQL per row scanned.
    """
    active = select(Webhook.id).where(Webhook.active.is_(True))
    due = [
        WebhookDelivery.status == "pending",
        WebhookDelivery.next_attempt_at <= now,
        WebhookDelivery.webhook_id.in_(active),
    ]
    if session.scalar(select(WebhookDelivery.id).where(*due).limit(1)) is None:
        return []  # idle: no lock taken (SQLite has only one)
    take_write_lock(session)
    with no_lock_wait(session):
        ids = list(
            session.scalars(
                select(WebhookDelivery.id)
                .where(*due)
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                .limit(limit)
                .with_for_update(skip_locked=True, of=WebhookDelivery)
            )
        )
    if not ids:
        return []
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids))
        .values(attempts=WebhookDelivery.attempts + 1, next_attempt_at=now + LEASE, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return _claims(session, ids)


def _claims(session: Session, delivery_ids: list[str]) -> list[Claim]:
    """What to send for the claimed deliveries, with their webhook's URL and secret."""
    rows = session.execute(
        select(
            WebhookDelivery.id,
            WebhookDelivery.webhook_id,
            Webhook.url,
            Webhook.secret,
            WebhookDelivery.event_type,
            WebhookDelivery.payload,
            WebhookDelivery.attempts,
        )
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.id.in_(delivery_ids))
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
    ).all()
    return [Claim(*row) for row in rows]


def disable_webhook(session: Session, webhook_id: str, now: datetime, failures: int) -> bool:
    """Disable a webhook that keeps failing; `webhook.disabled` if it was active."""
    version = session.scalar(
        update(Webhook)
        .where(Webhook.id == webhook_id, Webhook.active.is_(True))
        .values(active=False, disabled_at=now, updated_at=now, version=Webhook.version + 1)
        .returning(Webhook.version)
        .execution_options(synchronize_session=False)
    )
    if version is None:
        return False
    data = {
        "webhook_id": webhook_id,
        "reason": "consecutive_failures",
        "consecutive_failures": failures,
        "disabled_at": isoformat(now),
    }
    record_event(session, "webhook.disabled", webhook_id, data, aggregate_version=version)
    log.warning("webhook %s disabled after %d failed deliveries in a row", webhook_id, failures)
    return True


def _count_failed_delivery(session: Session, webhook_id: str, now: datetime) -> None:
    failures = session.scalar(
        update(Webhook)
        .where(Webhook.id == webhook_id)
        .values(consecutive_failures=Webhook.consecutive_failures + 1)
        .returning(Webhook.consecutive_failures)
        .execution_options(synchronize_session=False)
    )
    if failures is not None and failures >= DISABLE_AFTER:
        disable_webhook(session, webhook_id, now, failures)


def _reset_failures(session: Session, webhook_id: str) -> None:
    session.execute(
        update(Webhook)
        .where(Webhook.id == webhook_id, Webhook.consecutive_failures != 0)
        .values(consecutive_failures=0)
        .execution_options(synchronize_session=False)
    )


def record_outcome(session: Session, claim: Claim, outcome: Outcome, now: datetime) -> None:
    """Store how an attempt ended: delivered, retried later, or failed for good."""
    delivery = session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.id == claim.delivery_id).with_for_update()
    ).first()
    if delivery is None or delivery.status != "pending" or delivery.attempts != claim.attempts:
        log.info("outcome of webhook delivery %s dropped: taken over", claim.delivery_id)
        return  # deleted, or its lease ran out and another attempt was claimed
    delivery.last_status_code, delivery.last_error = outcome.status_code, outcome.error
    delivery.updated_at = now
    if outcome.delivered:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = "delivered", now, None
        _reset_failures(session, claim.webhook_id)
    elif delivery.attempts >= MAX_ATTEMPTS:
        delivery.status, delivery.next_attempt_at = "failed", None
        log.warning("webhook delivery %s failed for good: %s", delivery.id, outcome.error)
        _count_failed_delivery(session, claim.webhook_id, now)
    else:
        delivery.next_attempt_at = now + BACKOFF[delivery.attempts - 1]


def send_all(claims: list[Claim], timeout: float, allowed: tuple[Any, ...] = ()) -> list[Outcome]:
    """POST the claimed attempts, a few in parallel; outcomes in the same order."""
    if not claims:
        return []
    with ThreadPoolExecutor(max_workers=min(SEND_THREADS, len(claims))) as pool:
        return list(pool.map(lambda claim: post_delivery(claim, timeout, allowed), claims))


def deliver_due(
    db: Database, settings: Settings, now: datetime | None = None, batch: int = 50
) -> int:
    """Send the webhook deliveries that are due; how many attempts were made."""
    moment = (now.replace(tzinfo=now.tzinfo or UTC).astimezone(UTC)) if now else utcnow()
    deadline = time.monotonic() + TIME_BUDGET_SECONDS
    attempted = 0
    allowed = webhooks.allowed_networks(settings.extra.get("webhook_allowed_networks", ()))
    while True:
        with db.session() as session:
            claims = claim_due(session, moment, batch)
        outcomes = send_all(claims, settings.http_timeout_seconds, allowed)
        if claims:
            with db.session() as session:
                for claim, outcome in zip(claims, outcomes, strict=True):
                    record_outcome(session, claim, outcome, moment)
        attempted += len(claims)
        if len(claims) < batch or time.monotonic() > deadline:
            return attempted


def delivery_timer(settings: Settings, db: Database) -> Timer:
    """The worker timer that sends due webhook deliveries."""
    every = float(settings.extra.get("notifications_tick_seconds", 1.0))

    def deliver_webhooks() -> None:
        """Send what is due now."""
        deliver_due(db, settings)

    return Timer(every, deliver_webhooks, "webhook deliveries")
