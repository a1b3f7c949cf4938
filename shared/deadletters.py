"""Dead letters: list them without losing them, replay them to the service queue.

And `publish_raw`, for tests and integrations that put a message on the exchange.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from shared.bus import (
    ATTEMPT_HEADER,
    CONNECTION_ERRORS,
    attempt_of,
    connection_parameters,
    with_headers,
)
from shared.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    """A message waiting in the DLQ, as `crm dlq list` shows it."""

    body: bytes
    reason: str | None
    error: str | None
    attempt: int
    headers: dict[str, Any]


def _dead_letter(properties: pika.BasicProperties, body: bytes) -> DeadLetter:
    headers = dict(properties.headers or {})
    reason = headers.get("x-crm-reason") or headers.get("x-first-death-reason")
    return DeadLetter(body, reason, headers.get("x-crm-error"), attempt_of(properties), headers)


@contextlib.contextmanager
def _channel(settings: Settings, confirm: bool = False) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(connection_parameters(settings))
    try:
        channel = connection.channel()
        if confirm:
            channel.confirm_delivery()
        yield channel
    finally:
        with contextlib.suppress(*CONNECTION_ERRORS):
            connection.close()


def list_dead_letters(settings: Settings, limit: int = 100) -> list[DeadLetter]:
    """Browse up to `limit` dead letters without removing them.

    Each is fetched with basic_get and held unacknowledged (so the next get returns the
    next message), then all are given back at once with nack(requeue=True). If this
    process dies halfway, the broker requeues them all the same.
    """
    letters: list[DeadLetter] = []
    with _channel(settings) as channel:
        last_tag = None
        while len(letters) < limit:
            method, properties, body = channel.basic_get(settings.dead_letter_queue)
            if method is None:
                break
            last_tag = method.delivery_tag
            letters.append(_dead_letter(properties, body))
        if last_tag is not None:
            channel.basic_nack(last_tag, multiple=True, requeue=True)
    return letters


def replay_dead_letters(settings: Settings, limit: int | None = None) -> int:
    """Move dead letters back to the service queue with the attempt count reset.

    Each message is republished (confirmed) before its DLQ copy is acked: a crash in
    between duplicates it, which the idempotent consumer absorbs, and loses nothing.
    """
    moved = 0
    with _channel(settings, confirm=True) as channel:
        # Only the letters waiting now: one the running consumer dead-letters again
        # meanwhile must not come round a second time in the same replay.
        queue = channel.queue_declare(settings.dead_letter_queue, passive=True)
        waiting = queue.method.message_count
        while moved < (waiting if limit is None else min(limit, waiting)):
            method, properties, body = channel.basic_get(settings.dead_letter_queue)
            if method is None:
                break
            fresh = with_headers(properties, {ATTEMPT_HEADER: 0})
            channel.basic_publish("", settings.queue, body, fresh, mandatory=True)
            channel.basic_ack(method.delivery_tag)
            moved += 1
    log.info("replayed %d dead letters to %s", moved, settings.queue)
    return moved


def publish_raw(
    settings: Settings,
    routing_key: str,
    body: bytes | str,
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish one message to the events exchange, confirmed (tests and integrations)."""
    data = body.encode() if isinstance(body, str) else body
    properties = pika.BasicProperties(
        delivery_mode=2, content_type="application/json", headers=headers or None
    )
    with _channel(settings, confirm=True) as channel:
        channel.exchange_declare(settings.exchange, exchange_type="topic", durable=True)
        channel.basic_publish(settings.exchange, routing_key, data, properties)
