"""Helpers every service's tests use the same way (shipped with the library, as nameko does)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll until `predicate()` holds; fail the test after `timeout` seconds (never hang)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting {what}".strip()
        time.sleep(0.02)


def make_event(event_type: str, data: dict[str, Any], source: str = "test", **fields: Any) -> Any:
    """An envelope as another service would publish it (a fresh id and aggregate id)."""
    from shared.events import Envelope

    fields.setdefault("aggregate_id", str(uuid.uuid4()))
    return Envelope(type=event_type, source=source, data=data, **fields)


def handle_event(db: Any, handlers: dict[str, Any], envelope: Any) -> None:
    """Apply one event with the service's handler in one transaction, as the consumer does."""
    with db.session() as session:
        handlers[envelope.type](session, envelope)


def outbox_events(db: Any, event_type: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of every event a service recorded in its outbox, oldest first."""
    import sqlalchemy as sa

    query = sa.select(db.outbox.c.event_type, db.outbox.c.payload).order_by(db.outbox.c.position)
    if event_type is not None:
        query = query.where(db.outbox.c.event_type == event_type)
    with db.engine.connect() as connection:
        return [(kind, json.loads(payload)["data"]) for kind, payload in connection.execute(query)]
