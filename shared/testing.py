"""Helpers every service's tests use the same way (shipped with the library, as nameko does)."""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll until `predicate()` holds; fail the test after `timeout` seconds (never hang)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting {what}".strip()
        time.sleep(0.02)


def make_event(
    event_type: str, data: dict[str, Any], source: str | None = None, **fields: Any
) -> Any:
    """An envelope as another service would publish it (a fresh id and aggregate id).

    The source defaults to the type's producer (shared.producers), so the consumer, which
    dead-letters a source that may not publish the type, takes it; "test" if it has none.
    """
    from shared.events import Envelope
    from shared.producers import INTEGRATION, allowed_producers

    if source is None:
        producers = sorted(
            allowed_producers(event_type), key=lambda name: (name == INTEGRATION, name)
        )
        source = producers[0] if producers else "test"
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


def outbox_envelopes(db: Any, event_type: str | None = None) -> list[dict[str, Any]]:
    """The whole envelope (aggregate id and version too) of every outbox event, oldest first."""
    import sqlalchemy as sa

    query = sa.select(db.outbox.c.payload).order_by(db.outbox.c.position)
    if event_type is not None:
        query = query.where(db.outbox.c.event_type == event_type)
    with db.engine.connect() as connection:
        return [json.loads(payload) for payload in connection.scalars(query)]


# The subject of the admin token the service tests send.
ADMIN_ID = "00000000-0000-4000-8000-000000000001"
# The signing secret of the tests (the top conftest puts it in CRM_JWT_SECRET): only ever
# here, never a default of the code.
TEST_JWT_SECRET = "test-only-signing-secret-" + "0123456789abcdef" * 2


def service_app(create_app: Callable[[dict[str, Any]], Any], database_url: str) -> Any:
    """A service's app on a test database (tables made), disposed after the test."""
    app = create_app(
        {"database_url": database_url, "create_tables": True, "max_body_bytes": 2 * 1024 * 1024}
    )
    app.config["TESTING"] = True
    yield app
    app.extensions["crm.db"].dispose()


def token_for(app: Any, role: str = "admin", subject: str = ADMIN_ID, team: bool = False) -> str:
    """A token a service accepts for a caller with this role: a service-call token, as the
    gateway forwards (a service refuses clients' access tokens)."""
    from shared.auth import Principal, issue_service_token

    settings = app.extensions["crm.settings"]
    return issue_service_token(settings, Principal(subject, role, f"{role}@example.com", team=team))


def admin_client(app: Any) -> Any:
    """A test client that sends an admin token with every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app)}"
    return client


def row_counts(db: Any, *tables: str) -> dict[str, int]:
    """How many rows each table holds: to prove a refused request changed nothing."""
    import sqlalchemy as sa

    with db.engine.connect() as connection:
        return {
            name: connection.execute(
                sa.select(sa.func.count()).select_from(db.metadata.tables[name])
            ).scalar_one()
            for name in tables
        }


def every_value(db: Any) -> list[str]:
    """Every value in every table of a service's database, as text (erasure tests)."""
    import sqlalchemy as sa

    values = []
    with db.engine.connect() as connection:
        for table in db.metadata.sorted_tables:
            for row in connection.execute(sa.select(table)):
                values.extend(str(value) for value in row if value is not None)
    return values


@contextlib.contextmanager
def consuming_worker(
    settings: Any, db: Any, handlers: dict[str, Any], *, timers: Any = ()
) -> Iterator[Any]:
    """A service worker running in a thread with its queue and bindings declared; stopped after."""
    from shared.worker import ServiceWorker

    worker = ServiceWorker(settings, db, handlers, timers=timers)
    thread = worker.start()
    try:
        # Consuming means the queue and every binding are declared: nothing published is lost.
        wait_until(worker.consumer.consuming.is_set, 15, "for the worker to consume")
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=15)


@contextlib.contextmanager
def service_worker_on_new_database(
    settings: Any, make_database: Callable[[Any], Any], handlers: Callable[[Any], dict[str, Any]]
) -> Iterator[tuple[Any, Any]]:
    """A service's consumer as deployed (`handlers(settings)`) on a real queue and a fresh
    database of its own: (settings, database); stopped and disposed after."""
    database = make_database(settings)
    database.create_all()
    try:
        with consuming_worker(settings, database, handlers(settings)):
            yield settings, database
    finally:
        database.dispose()


# Bodies every JSON write route refuses, with the status each gets.
BAD_JSON_BODIES = [
    (b"{broken", 400),
    (b"\xff\xfe not utf-8", 400),
    (b"null", 400),
    (b"[]", 400),
    (b'"text"', 400),
    (b'{"surely_not_a_field": 1}', 422),
]
_PLACEHOLDER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def write_routes(create_app: Callable[..., Any]) -> list[tuple[str, str]]:
    """(method, rule) of every /api/ route of a service that may change something."""
    app = create_app({"database_url": "sqlite://"})
    routes = sorted(
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS", "GET"}
    )
    app.extensions["crm.db"].dispose()
    return routes


def route_placeholders(rule: str) -> set[str]:
    """The names of a route's variable parts (`<uuid:contact_id>` -> contact_id)."""
    return set(_PLACEHOLDER.findall(rule))


def route_path(rule: str, ids: dict[str, str]) -> str:
    """A route's path with each variable part taken from `ids`."""
    path = _PLACEHOLDER.sub(lambda match: ids[match.group(1)], rule)
    assert "<" not in path, f"no id for {rule}"
    return path


def table_snapshot(db: Any) -> dict[str, list[str]]:
    """Every row of every table, the outbox too: the proof that nothing changed."""
    import sqlalchemy as sa

    with db.engine.connect() as connection:
        return {
            table.name: sorted(map(repr, connection.execute(sa.select(table))))
            for table in db.metadata.sorted_tables
        }


def assert_bad_bodies_refused(client: Any, method: str, path: str) -> None:
    """Each of BAD_JSON_BODIES gets its status as a problem+json answer."""
    for body, status in BAD_JSON_BODIES:
        response = client.open(path, method=method, data=body, content_type="application/json")
        assert response.status_code == status, (path, body, response.get_data(as_text=True))
        assert response.mimetype == "application/problem+json"
