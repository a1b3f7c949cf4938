"""The one event bus: topology, the idempotent consumer, dead letters, a raw publisher.

The outbox relay (the publisher of a service's own events) lives in `shared.relay`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import Database
from shared.events import Envelope, parse_envelope, utcnow
from shared.logs import correlation_id
from shared.metrics import EVENTS_CONSUMED
from shared.producers import source_refusal

log = logging.getLogger(__name__)

Handler = Callable[[Session, Envelope], None]
ATTEMPT_HEADER = "x-crm-attempt"
MAX_ERROR_CHARS = 1000
# Errors that mean "the broker went away": reconnect, never crash.
# A handler under this key sees every event (its queue binds "#"): webhooks, audit trails.
ALL_EVENTS = "#"
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)


class PermanentError(Exception):
    """Raised by a handler for an event it can never apply: it goes to the DLQ at once."""


def redact_url(url: str) -> str:
    """The URL with its password replaced, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Backoff:
    """Growing, capped delays between reconnection attempts."""

    def __init__(self, first: float = 0.2, cap: float = 10.0) -> None:
        self.first, self.cap, self.current = first, cap, first

    def next(self) -> float:
        delay, self.current = self.current, min(self.current * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.current = self.first


def retry_queue_name(settings: Settings, delay: float) -> str:
    return f"{settings.queue}.retry.{int(delay * 1000)}ms"


def connection_parameters(settings: Settings) -> pika.URLParameters:
    params = pika.URLParameters(settings.amqp_url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 60
    return params


def declare_topology(
    channel: BlockingChannel, settings: Settings, event_types: Iterable[str]
) -> None:
    """Declare (idempotently) the exchanges and this service's queues, bound to its types."""
    quorum = {"x-queue-type": "quorum"}
    channel.exchange_declare(settings.exchange, exchange_type="topic", durable=True)
    channel.exchange_declare(settings.dead_letter_exchange, exchange_type="direct", durable=True)
    channel.queue_declare(settings.dead_letter_queue, durable=True, arguments=quorum)
    channel.queue_bind(
        settings.dead_letter_queue, settings.dead_letter_exchange, settings.dead_letter_queue
    )
    channel.queue_declare(
        settings.queue,
        durable=True,
        arguments={
            **quorum,
            "x-dead-letter-exchange": settings.dead_letter_exchange,
            "x-dead-letter-routing-key": settings.dead_letter_queue,
            "x-delivery-limit": settings.delivery_limit,
        },
    )
    # Quorum queues honour x-message-ttl since RabbitMQ 3.10 (checked on 3.10.8).
    for delay in settings.retry_delays:
        channel.queue_declare(
            retry_queue_name(settings, delay),
            durable=True,
            arguments={
                **quorum,
                "x-message-ttl": int(delay * 1000),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": settings.queue,
            },
        )
    for event_type in sorted(set(event_types)):
        channel.queue_bind(settings.queue, settings.exchange, event_type)


def prepare_queues(settings: Settings, event_types: Iterable[str]) -> None:
    """Declare a service's queues and bindings now, before any process runs.

    A queue binds only when its worker first connects; events published before that are
    routed nowhere. `crm run` and `crm <service> migrate` call this first, so a service
    that starts later still finds everything published for it since its queue existed.
    """
    connection = pika.BlockingConnection(connection_parameters(settings))
    try:
        declare_topology(connection.channel(), settings, event_types)
    finally:
        with contextlib.suppress(*CONNECTION_ERRORS):
            connection.close()


def with_headers(properties: pika.BasicProperties, headers: dict[str, Any]) -> Any:
    """A persistent copy of the properties with these headers (x-death dropped)."""
    kept = {
        key: value
        for key, value in (properties.headers or {}).items()
        if not key.startswith(("x-death", "x-first-death", "x-last-death", "x-crm-", "x-delivery-"))
    }
    result = copy.copy(properties)
    result.headers = {**kept, **headers}
    result.delivery_mode = 2
    return result


def attempt_of(properties: pika.BasicProperties) -> int:
    try:
        return int((properties.headers or {}).get(ATTEMPT_HEADER, 0))
    except (TypeError, ValueError):
        return 0


@contextlib.contextmanager
def _correlation(envelope: Envelope) -> Iterator[None]:
    token = correlation_id.set(envelope.correlation_id)
    try:
        yield
    finally:
        correlation_id.reset(token)


class _Rollback(Exception):
    """Unwinds a transaction because a handler failed on this delivery."""

    def __init__(self, delivery: _Delivery) -> None:
        super().__init__()
        self.delivery = delivery


@dataclass
class _Delivery:
    tag: int
    properties: pika.BasicProperties
    body: bytes
    envelope: Envelope | None = None
    failure: tuple[str, str] | None = None  # (reason, error text)
    duplicate: bool = field(default=False)
    outcome: str = ""  # of a failure: retried or dead_lettered
    routing_key: str | None = None  # as published to the events exchange (None: a retry)


class EventConsumer:
    """Consumes the service queue: idempotent handling, retries with delay, dead letters."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        handlers: dict[str, Handler],
        *,
        poll_seconds: float = 0.5,
    ) -> None:
        self.settings, self.db, self.handlers = settings, db, dict(handlers)
        self.poll_seconds = poll_seconds
        self.consuming = threading.Event()  # set while a connection is consuming
        self._pending: list[_Delivery] = []
        self._stop = threading.Event()

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set, reconnecting with backoff when the broker goes away."""
        backoff, self._stop = Backoff(), stop
        while not stop.is_set():
            try:
                self._consume(stop, backoff)
            except CONNECTION_ERRORS as error:
                delay = backoff.next()
                log.warning(
                    "consumer lost the broker at %s (%r); retrying in %.1fs",
                    redact_url(self.settings.amqp_url),
                    error,
                    delay,
                )
                stop.wait(delay)
            except Exception:  # a bug must not end the worker: messages are redelivered
                log.exception("consumer failed; reconnecting")
                stop.wait(backoff.next())
            finally:
                self.consuming.clear()
                self._pending.clear()  # unacked: the broker redelivers them

    def _consume(self, stop: threading.Event, backoff: Backoff) -> None:
        connection = pika.BlockingConnection(connection_parameters(self.settings))
        try:
            channel = connection.channel()
            declare_topology(channel, self.settings, self.handlers)
            channel.basic_qos(prefetch_count=self.settings.consumer_prefetch)
            confirms = connection.channel()
            confirms.confirm_delivery()
            channel.basic_consume(self.settings.queue, on_message_callback=self._on_message)
            backoff.reset()
            self.consuming.set()
            log.info("consuming %s", self.settings.queue)
            while not stop.is_set():
                connection.process_data_events(time_limit=self.poll_seconds)
                self._gather_more(connection)
                if self._pending:
                    batch, self._pending = self._pending, []
                    self._handle(batch, channel, confirms, connection)
        finally:
            with contextlib.suppress(*CONNECTION_ERRORS):
                connection.close()

    def _gather_more(self, connection: pika.BlockingConnection) -> None:
        """Take what else has already arrived, so one transaction handles a larger batch."""
        while 0 < len(self._pending) < self.settings.consumer_prefetch:
            before = len(self._pending)
            connection.process_data_events(time_limit=0)
            if len(self._pending) == before:
                return

    def _on_message(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        delivery = _Delivery(method.delivery_tag, properties, body)
        if method.exchange == self.settings.exchange:  # the key the broker authorised
            delivery.routing_key = method.routing_key
        self._pending.append(delivery)

    def _handle(self, batch: list[_Delivery], channel: Any, confirms: Any, connection: Any) -> None:
        """Apply a batch, send its failures on (confirmed), then ack all of it at once."""
        work = [delivery for delivery in batch if self._recognise(delivery)]
        if work and not self._apply_once_database_answers(work, connection):
            return  # stopping: left unacked, so the broker delivers the batch again
        for delivery in batch:
            if delivery.failure:
                self._route_failure(delivery, confirms)
        channel.basic_ack(batch[-1].tag, multiple=True)
        self._count(batch, work)

    def _apply_once_database_answers(self, work: list[_Delivery], connection: Any) -> bool:
        """Apply; while the service's own database is unreachable, wait and apply again.

        An outage is no fault of the messages: retrying them would spend their whole retry
        budget in seconds and dead-letter good events. False if told to stop meanwhile.
        """
        backoff = Backoff(first=0.5, cap=5.0)
        while True:
            self._apply(work)
            if not any(delivery.failure for delivery in work) or self.db.answers():
                return True
            delay = backoff.next()
            log.warning(
                "database unreachable; holding %d events, trying again in %.1fs", len(work), delay
            )
            connection.sleep(delay)  # answers the broker's heartbeats meanwhile
            if self._stop.is_set():
                return False
            for delivery in work:
                delivery.failure, delivery.duplicate = None, False

    def _count(self, batch: list[_Delivery], work: list[_Delivery]) -> None:
        """crm_events_consumed_total by outcome, once the batch is acknowledged."""
        applied = {id(delivery) for delivery in work}
        for delivery in batch:
            if delivery.failure:
                outcome = delivery.outcome
            elif id(delivery) in applied:
                outcome = "duplicate" if delivery.duplicate else "handled"
            else:
                continue  # a type this service does not handle: ignored, not consumed
            event_type = delivery.envelope.type if delivery.envelope else "malformed"
            EVENTS_CONSUMED.labels(self.settings.service, event_type, outcome).inc()

    def _recognise(self, delivery: _Delivery) -> bool:
        """Parse the body; False when there is nothing to apply."""
        try:
            delivery.envelope = parse_envelope(delivery.body)
        except Exception as error:  # MalformedEvent, or anything odd the parser hits
            delivery.failure = ("malformed", str(error))
            return False
        if not self._handlers_for(delivery.envelope.type):
            log.debug("ignoring event type %s", delivery.envelope.type)
            return False
        # Before any handler trusts the event: who may publish it, under which key.
        refusal = source_refusal(delivery.envelope, delivery.routing_key)
        if refusal:
            delivery.failure = ("forbidden_source", refusal)
            return False
        return True

    def _handlers_for(self, event_type: str) -> list[Handler]:
        """The type's own handler, then the one for every event (ALL_EVENTS), if any."""
        return [self.handlers[key] for key in (event_type, ALL_EVENTS) if key in self.handlers]

    def _apply(self, work: list[_Delivery]) -> None:
        """Apply the batch in one transaction; a failed handler's delivery leaves the batch."""
        while work:
            try:
                failed = self._apply_batch(work)
            except Exception:
                log.warning("batch transaction failed; applying one by one", exc_info=True)
                for delivery in work:
                    self._apply_alone(delivery)
                return
            if failed is None:
                return
            work = [delivery for delivery in work if delivery is not failed]

    def _apply_batch(self, work: list[_Delivery]) -> _Delivery | None:
        """One transaction: inbox rows first, then the handlers; the failed delivery or None."""
        try:
            with self.db.new_session() as session, session.begin():
                for delivery in self._claim_inbox(session, work):
                    if not self._run_handler(session, delivery):
                        raise _Rollback(delivery)
        except _Rollback as rollback:
            return rollback.delivery
        return None

    def _claim_inbox(self, session: Session, work: list[_Delivery]) -> list[_Delivery]:
        inbox = self.db.inbox
        ids = [delivery.envelope.id for delivery in work]  # type: ignore[union-attr]
        seen = set(session.scalars(select(inbox.c.event_id).where(inbox.c.event_id.in_(ids))))
        fresh = []
        for delivery in work:
            event_id = delivery.envelope.id  # type: ignore[union-attr]
            delivery.duplicate = event_id in seen
            if not delivery.duplicate:
                seen.add(event_id)
                fresh.append(delivery)
        if fresh:
            session.execute(inbox.insert(), [self._inbox_row(d.envelope) for d in fresh])
            session.flush()
        return fresh

    @staticmethod
    def _inbox_row(envelope: Any) -> dict[str, Any]:
        return {"event_id": envelope.id, "event_type": envelope.type, "handled_at": utcnow()}

    def _run_handler(self, session: Session, delivery: _Delivery) -> bool:
        """Call the handler; on failure remember why and return False."""
        envelope = delivery.envelope
        assert envelope is not None
        with _correlation(envelope):
            try:
                for handler in self._handlers_for(envelope.type):
                    handler(session, envelope)
                session.flush()  # so a handler's bad write fails here, not at commit
                return True
            except PermanentError as error:
                delivery.failure = ("permanent", repr(error))
            except Exception as error:
                delivery.failure = ("transient", repr(error))
            log.warning(
                "handler for %s %s failed (%s): %s",
                envelope.type,
                envelope.id,
                delivery.failure[0],
                delivery.failure[1][:200],
            )
            return False

    def _apply_alone(self, delivery: _Delivery) -> None:
        """Fallback: one delivery in its own transaction; any error is a failure, not a crash."""
        try:
            with self.db.new_session() as session, session.begin():
                try:
                    fresh = self._claim_inbox(session, [delivery])
                except IntegrityError:  # another replica applied it meanwhile
                    delivery.duplicate = True
                    raise _Rollback(delivery) from None
                if fresh and not self._run_handler(session, delivery):
                    raise _Rollback(delivery)
        except _Rollback:
            pass
        except Exception as error:
            delivery.failure = ("transient", repr(error))

    def _route_failure(self, delivery: _Delivery, confirms: BlockingChannel) -> None:
        """Retry later (transient, attempts left) or dead-letter; confirmed before the ack."""
        reason, error = delivery.failure  # type: ignore[misc]
        attempt = attempt_of(delivery.properties)
        delays = self.settings.retry_delays
        if reason == "transient" and attempt < len(delays):
            retry = with_headers(delivery.properties, {ATTEMPT_HEADER: attempt + 1})
            queue = retry_queue_name(self.settings, delays[attempt])
            confirms.basic_publish("", queue, delivery.body, retry, mandatory=True)
            delivery.outcome = "retried"
            return
        if reason == "transient":
            reason = "retries_exhausted"
        headers = {
            "x-crm-reason": reason,
            "x-crm-error": error[:MAX_ERROR_CHARS],
            "x-crm-queue": self.settings.queue,
            ATTEMPT_HEADER: attempt,
        }
        confirms.basic_publish(
            self.settings.dead_letter_exchange,
            self.settings.dead_letter_queue,
            delivery.body,
            with_headers(delivery.properties, headers),
            mandatory=True,
        )
        delivery.outcome = "dead_lettered"
        log.warning("dead-lettered a message (%s): %s", reason, error[:200])
