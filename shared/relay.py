"""The outbox relay: publishes unsent outbox rows with batched publisher confirms.

pika's asynchronous SelectConnection keeps a whole batch of confirms in flight (the
blocking adapter waits one round trip per message). A row is marked sent only after
the broker confirmed it; rows of a lost connection are released (or their claim
lease expires), so every committed event is published at least once.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pika
from pika.adapters.select_connection import SelectConnection

from shared import outbox
from shared.bus import CONNECTION_ERRORS, Backoff, connection_parameters, redact_url
from shared.config import Settings
from shared.db import Database
from shared.metrics import EVENTS_PUBLISHED

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 60.0
STOP_CHECK_SECONDS = 0.2


def _guarded(method: Callable[..., None]) -> Callable[..., None]:
    """An ioloop callback that closes the link on error instead of killing the loop."""

    @functools.wraps(method)
    def wrapper(self: _Link, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception:
            log.exception("outbox relay step failed; reconnecting")
            self.close()

    return wrapper


class OutboxRelay:
    """Moves committed outbox rows to the broker, confirmed, in batches."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        lease_seconds: float = 60.0,
        confirm_timeout: float = 30.0,
    ) -> None:
        self.settings, self.db = settings, db
        self.lease_seconds, self.confirm_timeout = lease_seconds, confirm_timeout
        self.published = 0
        self.connected = threading.Event()  # set while a link is up
        self._last_purge = time.monotonic()

    def run(self, stop: threading.Event) -> None:
        """Relay until `stop` is set, reconnecting with backoff."""
        self._loop(stop, until_empty=False, deadline=None)

    def relay_until_empty(self, timeout: float = 10.0) -> int:
        """Publish everything unsent (or until `timeout`); the number of rows published."""
        before = self.published
        self._loop(threading.Event(), until_empty=True, deadline=time.monotonic() + timeout)
        return self.published - before

    def _loop(self, stop: threading.Event, until_empty: bool, deadline: float | None) -> None:
        backoff = Backoff()
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            link = _Link(self, stop, until_empty, deadline)
            try:
                link.run()
            except CONNECTION_ERRORS as error:
                log.warning("outbox relay connection failed: %r", error)
            except Exception:  # a bug must not end the worker: unsent rows stay unsent
                log.exception("outbox relay failed")
            finally:
                link.give_back()
                self.connected.clear()
            if link.finished or stop.is_set():
                return
            if link.opened:
                backoff.reset()
            delay = backoff.next()
            log.warning(
                "outbox relay lost the broker at %s; retrying in %.1fs",
                redact_url(self.settings.amqp_url),
                delay,
            )
            stop.wait(delay if deadline is None else min(delay, deadline - time.monotonic()))

    def purge_if_due(self) -> None:
        """Delete old sent rows, at most once a minute."""
        if time.monotonic() - self._last_purge < PURGE_EVERY_SECONDS:
            return
        self._last_purge = time.monotonic()
        with self.db.session() as session:
            purged = outbox.purge_sent(session, self.settings.outbox_retention_hours)
        if purged:
            log.info("purged %d sent outbox rows", purged)


class _Link:
    """One connection's life: claim, publish, await confirms, mark sent, repeat."""

    def __init__(
        self, relay: OutboxRelay, stop: threading.Event, until_empty: bool, deadline: float | None
    ) -> None:
        self.relay, self.settings, self.db = relay, relay.settings, relay.db
        self.stop, self.until_empty, self.deadline = stop, until_empty, deadline
        self.opened = self.finished = self.closing = False
        self.channel: Any = None
        self.pending: dict[int, tuple[int, str]] = {}  # delivery tag -> (position, type)
        self.confirmed: list[tuple[int, str]] = []
        self.refused: list[tuple[int, str]] = []
        self.next_tag = self.lowest_tag = 1
        self.batch_number = 0
        self.connection: Any = None

    def run(self) -> None:
        self.connection = SelectConnection(
            connection_parameters(self.settings),
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_gone,
            on_close_callback=self._on_gone,
        )
        self.connection.ioloop.call_later(STOP_CHECK_SECONDS, self._watch)
        self.connection.ioloop.start()

    def close(self) -> None:
        """Close the connection (the ioloop then stops) or just stop the ioloop."""
        self.closing = True
        connection = self.connection
        if connection is not None and connection.is_open:
            connection.close()
        elif connection is not None and not connection.is_closing:
            connection.ioloop.stop()

    def _on_gone(self, _connection: Any, error: Any = None) -> None:
        if not self.closing and not self.finished:
            log.warning("outbox relay connection closed: %r", error)
        self.connection.ioloop.stop()

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.exchange_declare(
            self.settings.exchange,
            exchange_type="topic",
            durable=True,
            callback=lambda _frame: channel.confirm_delivery(self._on_confirm, self._on_ready),
        )

    def _on_channel_closed(self, _channel: Any, reason: Any) -> None:
        if not self.closing:
            log.warning("outbox relay channel closed: %r", reason)
            self.close()

    def _on_ready(self, _frame: Any) -> None:
        self.opened = True
        self.relay.connected.set()
        log.info("outbox relay connected to %s", redact_url(self.settings.amqp_url))
        self._claim()

    def _watch(self) -> None:
        """Honour stop and deadline within a fraction of a second, even while idle."""
        expired = self.deadline is not None and time.monotonic() > self.deadline
        if self.stop.is_set() or expired:
            if not self.pending or expired:
                self.close()
                return
        self.connection.ioloop.call_later(STOP_CHECK_SECONDS, self._watch)

    @_guarded
    def _claim(self) -> None:
        if self.closing or self.stop.is_set():
            self.close()
            return
        self.relay.purge_if_due()
        with self.db.session() as session:
            rows = outbox.claim_batch(
                session, self.settings.relay_batch_size, self.relay.lease_seconds
            )
        if not rows:
            if self.until_empty:
                self.finished = True
                self.close()
            else:
                self.connection.ioloop.call_later(self.settings.relay_idle_seconds, self._claim)
            return
        for position, event_type, payload in rows:
            self._publish(position, event_type, payload)
        self.batch_number += 1
        self.connection.ioloop.call_later(
            self.relay.confirm_timeout, functools.partial(self._confirm_overdue, self.batch_number)
        )

    def _publish(self, position: int, event_type: str, payload: str) -> None:
        envelope = json.loads(payload)
        properties = pika.BasicProperties(
            delivery_mode=2,
            content_type="application/json",
            message_id=envelope.get("id"),
            type=event_type,
            correlation_id=envelope.get("correlation_id") or None,
        )
        self.channel.basic_publish(self.settings.exchange, event_type, payload.encode(), properties)
        self.pending[self.next_tag] = (position, event_type)
        self.next_tag += 1

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        positions = self._take_confirmed(method.delivery_tag, method.multiple)
        if method.NAME == "Basic.Ack":
            self.confirmed.extend(positions)
        else:
            log.warning("broker refused %d events; they will be retried", len(positions))
            self.refused.extend(positions)
        if not self.pending:
            self._finish_batch()

    def _take_confirmed(self, tag: int, multiple: bool) -> list[tuple[int, str]]:
        if not multiple:
            return [self.pending.pop(tag)] if tag in self.pending else []
        positions = []
        while self.lowest_tag <= tag:
            position = self.pending.pop(self.lowest_tag, None)
            if position is not None:
                positions.append(position)
            self.lowest_tag += 1
        return positions

    @_guarded
    def _finish_batch(self) -> None:
        confirmed, refused = self._settle()
        self.relay.published += confirmed
        if refused:  # the broker is refusing (e.g. a full queue): do not spin
            self.connection.ioloop.call_later(self.settings.relay_idle_seconds, self._claim)
        else:
            self._claim()

    def _confirm_overdue(self, batch_number: int) -> None:
        if batch_number == self.batch_number and self.pending and not self.closing:
            log.warning("no confirms for %.0fs; reconnecting", self.relay.confirm_timeout)
            self.close()

    def _settle(self) -> tuple[int, int]:
        """Mark confirmed rows sent and release refused ones."""
        confirmed, refused = self.confirmed, self.refused
        self.confirmed, self.refused = [], []
        if confirmed or refused:
            with self.db.session() as session:
                outbox.mark_sent(session, [position for position, _type in confirmed])
                outbox.release(session, [position for position, _type in refused])
            for event_type, count in Counter(kind for _position, kind in confirmed).items():
                EVENTS_PUBLISHED.labels(self.settings.service, event_type).inc(count)
        return len(confirmed), len(refused)

    def give_back(self) -> None:
        """After the connection is gone: keep what was confirmed, release the rest."""
        self.refused.extend(self.pending.values())
        self.pending.clear()
        try:
            confirmed, _ = self._settle()
            self.relay.published += confirmed
        except Exception:  # the claim lease expires and the rows are taken again
            log.exception("could not release unconfirmed outbox rows")
