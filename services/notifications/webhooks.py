"""Outgoing webhooks: subscriptions, which events they take, and the fan-out to deliveries.

A webhook subscribes `url` to event-type patterns: an exact type (`deal.won`), every verb
of an aggregate (`ticket.*`), every aggregate of a verb (`*.created`) or everything (`*`).
`on_any_event` is the consumer's ALL_EVENTS handler: for every event the broker carries it
writes one `WebhookDelivery` per active webhook whose patterns match, in the consumer's
transaction (so a rolled-back batch leaves no delivery behind). The delivery's payload is
the envelope as JSON: exactly the bytes POSTed later by `webhook_delivery.deliver_due`.
The unique (webhook_id, event_id) makes a second fan-out of the same event a no-op.

URLs must be https, except plain http to a loopback host (localhost, 127.0.0.0/8, ::1)
for development and tests: payloads carry personal data, and the signature protects their
integrity, not their confidentiality. Credentials in the URL are refused (they would show
in every listing and log line); the receiver authenticates us by the signature.

No request forgery into the network the CRM runs in: a host must be a public address. An
address written in the URL (in any spelling: `169.254.169.254`, `2852039166`,
`[::ffff:a9fe:a9fe]`) that is loopback, private, link-local (cloud metadata), unspecified,
multicast or reserved is refused here, and a name is resolved again before each delivery and
the connection made to the address checked (`webhook_transport`), so a name pointing inside
is not fetched either, even when its second DNS answer differs from its first. An operator
opens networks with CRM_WEBHOOK_ALLOWED_NETWORKS: receivers on a private network
(`10.20.0.0/16`), or loopback (`127.0.0.0/8,::1/128`) for development and tests with a
receiver on the same machine; by default even loopback is refused (the CRM's own services
and broker listen there).

A disabled webhook (by hand, or automatically after repeated failures) gets no new
deliveries; its pending ones wait and go out once it is enabled again.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import socket
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.notifications.models import Webhook, WebhookDelivery, new_id
from shared.bus import ALL_EVENTS, Handler
from shared.config import Settings
from shared.events import Envelope, utcnow
from shared.web import ApiError, check_version, conflict, not_found

log = logging.getLogger(__name__)

_NAME = r"[a-z][a-z0-9_]*"
PATTERN = re.compile(rf"^(?:\*|{_NAME}\.(?:{_NAME}|\*)|\*\.{_NAME})$")
PATTERN_HELP = "Use an event type (deal.won), aggregate.* (ticket.*), *.verb or *."
SECRET_BYTES = 32  # token_urlsafe(32): 43 characters, 256 bits
_ACTIVE_CACHE = "notifications.active_webhooks"


# --- patterns and URLs ---------------------------------------------------------------------


def is_pattern(pattern: str) -> bool:
    """Whether `pattern` is an event-type pattern a webhook may subscribe to."""
    return bool(PATTERN.match(pattern))


def matches(pattern: str, event_type: str) -> bool:
    """Whether an event type falls under a pattern (`*` stands for one whole segment)."""
    if pattern == "*":
        return True
    wanted, actual = pattern.split("."), event_type.split(".")
    if len(wanted) != len(actual):
        return False
    return all(part in ("*", given) for part, given in zip(wanted, actual, strict=True))


def subscribed(patterns: Iterable[str], event_type: str) -> bool:
    """Whether any of a webhook's patterns takes this event type."""
    return any(matches(pattern, event_type) for pattern in patterns)


def is_loopback(host: str) -> bool:
    """localhost, *.localhost or a loopback address: the only hosts plain http may reach."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host is written as, in any spelling the resolver accepts; None: a name."""
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(str(infos[0][4][0]).split("%", 1)[0])


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def allowed_networks(
    cidrs: Iterable[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """CRM_WEBHOOK_ALLOWED_NETWORKS as networks; an entry that is no network is left out."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            log.warning("CRM_WEBHOOK_ALLOWED_NETWORKS: %r is not a network; left out", cidr)
    return tuple(networks)


def is_reachable_address(address: Address, allowed: Iterable[Any] = ()) -> bool:
    """A public address, or one in the networks the operator opened (loopback among them)."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if any(address in network for network in allowed):
        return True
    return address.is_global and not (address.is_multicast or address.is_reserved)


def address_problem(
    host: str, addresses: Iterable[Address], allowed: Iterable[Any] = ()
) -> str | None:
    """Why `host`, having these addresses, must not be sent to, or None."""
    allowed = tuple(allowed)
    internal = sorted({str(a) for a in addresses if not is_reachable_address(a, allowed)})
    if internal:
        return f"The host {host} is an internal address ({', '.join(internal)})."
    return None


def host_problem(host: str, *, resolve: bool = False, allowed: Iterable[Any] = ()) -> str | None:
    """Why a host must not be sent to (an internal address), or None.

    `resolve`: also look a name up (at delivery time) and check every address it has.
    `allowed`: private networks the operator opened to webhooks.
    """
    literal = address_of(host)
    if literal is not None:
        addresses = [literal]
    elif is_loopback(host):  # localhost by name: loopback without asking the resolver
        addresses = [ipaddress.ip_address("127.0.0.1")]
    elif resolve:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError, ValueError):
            return None  # unknown names fail on their own when the request is made
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    else:
        return None
    return address_problem(host, addresses, allowed)


def url_problem(url: str, allowed: Iterable[Any] = ()) -> str | None:
    """Why a webhook URL is refused, or None when it is acceptable."""
    if any(character.isspace() or ord(character) < 32 for character in url):
        return "The URL cannot contain spaces or control characters."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "Not a valid URL."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Use an http(s) URL with a host."
    if parts.username is not None or parts.password is not None:
        return "Credentials cannot be part of the URL; receivers check the signature instead."
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "Use https (plain http is only allowed to localhost, when loopback is opened)."
    return host_problem(parts.hostname, allowed=allowed)


def new_secret() -> str:
    """A signing secret: 32 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(SECRET_BYTES)


# --- webhooks ------------------------------------------------------------------------------


def get_webhook(session: Session, webhook_id: Any, *, for_update: bool = False) -> Webhook:
    """A webhook, or 404; `for_update` locks it until the transaction ends."""
    statement = select(Webhook).where(Webhook.id == str(webhook_id))
    if for_update:
        statement = statement.with_for_update()
    webhook = session.scalars(statement).first()
    if webhook is None:
        raise not_found("webhook", webhook_id)
    return webhook


def create_webhook(session: Session, data: Mapping[str, Any]) -> Webhook:
    """A new webhook from validated input; the secret is generated unless given."""
    webhook_id = data.get("id") or new_id()
    if session.get(Webhook, webhook_id) is not None:
        raise conflict(f"A webhook with id {webhook_id} exists already")
    now = utcnow()
    active = data.get("active", True)
    webhook = Webhook(
        id=webhook_id,
        url=data["url"],
        event_types=list(data["event_types"]),
        secret=data.get("secret") or new_secret(),
        active=active,
        consecutive_failures=0,
        disabled_at=None if active else now,
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(webhook)
    session.flush()
    return webhook


def update_webhook(
    session: Session,
    webhook: Webhook,
    changes: Mapping[str, Any],
    *,
    expected_version: int | None = None,
) -> Webhook:
    """Apply a partial change. `active: true` re-enables (the failure count starts over)."""
    check_version(webhook.version, expected_version)
    changed = {k: v for k, v in changes.items() if getattr(webhook, k) != v}
    if not changed:
        return webhook
    now = utcnow()
    for key, value in changed.items():
        setattr(webhook, key, value)
    if changed.get("active") is True:
        webhook.consecutive_failures, webhook.disabled_at = 0, None
    elif changed.get("active") is False:
        webhook.disabled_at = now
    webhook.version += 1
    webhook.updated_at = now
    return webhook


# --- deliveries ----------------------------------------------------------------------------


def get_delivery(
    session: Session, webhook_id: Any, delivery_id: Any, *, for_update: bool = False
) -> WebhookDelivery:
    """One delivery of one webhook, or 404; `for_update` locks it."""
    statement = (
        select(WebhookDelivery)
        .where(WebhookDelivery.id == str(delivery_id))
        .where(WebhookDelivery.webhook_id == str(webhook_id))
    )
    if for_update:
        statement = statement.with_for_update()
    delivery = session.scalars(statement).first()
    if delivery is None:
        raise not_found("delivery", delivery_id)
    return delivery


def replay_delivery(
    session: Session, delivery: WebhookDelivery, now: datetime | None = None
) -> WebhookDelivery:
    """Queue a failed (or delivered) delivery again, due now, with a fresh retry schedule.

    A pending one is a 409: it is queued already. For a disabled webhook it waits until
    the webhook is enabled again.
    """
    if delivery.status == "pending":
        raise ApiError(409, "Conflict", "The delivery is pending: it is queued already")
    now = now or utcnow()
    delivery.status = "pending"
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.delivered_at = None
    delivery.updated_at = now
    return delivery


def _active_webhooks(session: Session) -> list[tuple[str, list[str]]]:
    """(id, patterns) of the active webhooks, read once per transaction (a consumer batch)."""
    transaction = session.get_transaction()
    cached = session.info.get(_ACTIVE_CACHE)
    if cached is not None and cached[0] is transaction:
        return cached[1]
    rows = session.execute(
        select(Webhook.id, Webhook.event_types).where(Webhook.active.is_(True))
    ).all()
    active = [(webhook_id, list(patterns or [])) for webhook_id, patterns in rows]
    session.info[_ACTIVE_CACHE] = (transaction, active)
    return active


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert deliveries; one that exists already (webhook_id, event_id) is left as it is."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(WebhookDelivery).values(rows)
    session.execute(statement.on_conflict_do_nothing(index_elements=["webhook_id", "event_id"]))


def on_any_event(session: Session, envelope: Envelope) -> None:
    """The ALL_EVENTS handler: one pending delivery per active webhook taking this type."""
    targets = [
        webhook_id
        for webhook_id, patterns in _active_webhooks(session)
        if subscribed(patterns, envelope.type)
    ]
    if not targets:
        return
    payload, now = envelope.to_json(), utcnow()
    rows = [
        {
            "id": new_id(),
            "webhook_id": webhook_id,
            "event_id": envelope.id,
            "event_type": envelope.type,
            "payload": payload,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for webhook_id in targets
    ]
    _insert_ignoring_duplicates(session, rows)
    log.debug("event %s %s fans out to %d webhook(s)", envelope.type, envelope.id, len(rows))


def erase_deliveries_about(session: Session, needles: Iterable[str]) -> int:
    """Delete the deliveries whose payload names any of `needles` (ids, lower-cased emails).

    Right to be forgotten: a kept payload (delivered, failed or pending) is a copy of an event
    about the person; a pending one is not sent any more. How many went.
    """
    found = [needle for needle in needles if needle]
    if not found:
        return 0
    payload = func.lower(WebhookDelivery.payload)
    names_them = or_(*(payload.contains(needle.lower(), autoescape=True) for needle in found))
    result = session.execute(delete(WebhookDelivery).where(names_them))
    return int(result.rowcount or 0)


def handlers(settings: Settings) -> dict[str, Handler]:
    """The webhooks' handler: every event type (ALL_EVENTS) goes to the fan-out."""
    return {ALL_EVENTS: on_any_event}
