"""Every POST that creates or acts, in every service and the gateway, takes `Idempotency-Key`.

The routes are read from the apps' URL maps: each POST that is neither read-only (search,
batch read, preview) nor public (signed links, forms), nor the gateway forwarding to a
service. For each, a key kept for another request is a 422 and a key kept for this very
request replays the first answer, before the view runs. Then, for the acts the review named
(batch creates, import, merge, win/lose/reopen, complete, assign, users, API keys), the
same key twice makes one record or effect and answers the same.
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from gateway.tests.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    FAST_HASHER,
    close_app,
    gateway_config,
)
from shared import idempotency
from shared.events import utcnow
from shared.testing import ADMIN_ID, admin_client, outbox_events, service_app

SERVICES = ("contacts", "sales", "support", "marketing", "notifications")
GATEWAY_ONLY_FORWARDS = "proxy."


def _public_prefixes(package: str) -> tuple[str, ...]:
    return tuple(getattr(importlib.import_module(f"{package}.app"), "PUBLIC_PREFIXES", ()))


def acting_routes(app: Flask, public: tuple[str, ...]) -> list[str]:
    """The rules of `app` whose POST creates or acts (and so must take a key)."""
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if "POST" in (rule.methods or ())
        and rule.rule.startswith("/api/")
        and not rule.rule.startswith(public)
        and not rule.endpoint.startswith(GATEWAY_ONLY_FORWARDS)
        and idempotency.acts(rule.rule)
    )


def _all_routes() -> list[tuple[str, str]]:
    found = []
    for name in SERVICES:
        package = f"services.{name}"
        app = importlib.import_module(f"{package}.app").create_app({"database_url": "sqlite://"})
        found += [(name, rule) for rule in acting_routes(app, _public_prefixes(package))]
        app.extensions["crm.db"].dispose()
    gateway = importlib.import_module("gateway.app").create_app(gateway_config("sqlite://"))
    found += [("gateway", rule) for rule in acting_routes(gateway, _public_prefixes("gateway"))]
    close_app(gateway)
    return found


ROUTES = _all_routes()


def concrete(rule: str) -> str:
    """The rule with each variable filled in: a fresh UUID, or a word."""
    path = re.sub(r"<uuid:[^>]+>", lambda _: str(uuid.uuid4()), rule)
    return re.sub(r"<(?:string:|path:)?[^>]+>", "some-id", path)


# --- apps and callers ----------------------------------------------------------------------


@pytest.fixture
def apps(tmp_path) -> Iterator[dict[str, Flask]]:
    made: dict[str, Flask] = {}
    for name in SERVICES:
        create_app = importlib.import_module(f"services.{name}.app").create_app
        made[name] = next(service_app(create_app, f"sqlite:///{tmp_path / name}.db"))
    made["gateway"] = _gateway(f"sqlite:///{tmp_path / 'gateway'}.db")
    yield made
    for name in SERVICES:
        made[name].extensions["crm.db"].dispose()
    close_app(made["gateway"])


def _gateway(database_url: str) -> Flask:
    from gateway.app import bootstrap_admin, create_app

    app = create_app(gateway_config(database_url))
    bootstrap_admin(app.extensions["crm.db"], app.extensions["crm.settings"], FAST_HASHER)
    return app


def caller(app: Flask) -> tuple[Any, str]:
    """An admin client of the app, and the subject its answers are kept under."""
    if "gateway.http" not in app.extensions:
        return admin_client(app), ADMIN_ID
    client = app.test_client()
    answer = client.post(
        "/api/v1/auth/token", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {answer.get_json()['access_token']}"
    return client, client.get("/api/v1/me").get_json()["id"]


def keep(app: Flask, scope: str, key: str, fingerprint: str, body: str) -> None:
    """An answer as the hook keeps it, for `key`."""
    db = app.extensions["crm.db"]
    row = {"scope": scope, "key": key, "fingerprint": fingerprint, "created_at": utcnow()}
    with db.session() as session:
        session.execute(
            db.idempotency.insert().values(**row, status=201, body=body, location="/first")
        )


# --- every route -----------------------------------------------------------------------------


def test_the_routes_were_found():
    rules = {rule for _name, rule in ROUTES}
    for named in (
        "/api/v1/contacts/batch/create",
        "/api/v1/contacts/import",
        "/api/v1/contacts/<uuid:contact_id>/merge",
        "/api/v1/deals/<uuid:deal_id>/win",
        "/api/v1/deals/<uuid:deal_id>/lose",
        "/api/v1/deals/<uuid:deal_id>/reopen",
        "/api/v1/tasks/<uuid:task_id>/complete",
        "/api/v1/tickets/<uuid:ticket_id>/assign",
        "/api/v1/campaigns/<uuid:campaign_id>/launch",
        "/api/v1/users",
        "/api/v1/api-keys",
    ):
        assert named in rules
    assert not any(rule.endswith(("/search", "/batch/read")) for rule in rules)


@pytest.mark.parametrize(("service", "rule"), ROUTES, ids=[f"{s}:{r}" for s, r in ROUTES])
def test_every_post_that_creates_or_acts_takes_an_idempotency_key(apps, service, rule):
    app = apps[service]
    client, scope = caller(app)
    path, body = concrete(rule), b'{"anything": 1}'
    with app.test_request_context(path, method="POST", data=body):
        fingerprint = idempotency._fingerprint()
    keep(app, scope, "used-elsewhere", "another request", '{"id": "other"}')
    keep(app, scope, "this-one", fingerprint, '{"id": "first"}')
    json = {"data": body, "content_type": "application/json"}

    other = client.post(path, headers={"Idempotency-Key": "used-elsewhere"}, **json)
    assert other.status_code == 422, other.get_data(as_text=True)
    assert "was used for another request" in other.get_json()["detail"]
    again = client.post(path, headers={"Idempotency-Key": "this-one"}, **json)
    assert (again.status_code, again.get_json()) == (201, {"id": "first"})
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == "/first"


def test_a_post_that_only_reads_answers_afresh(apps):
    app = apps["contacts"]
    client, scope = caller(app)
    keep(app, scope, "k", "another request", "{}")
    answer = client.post("/api/v1/contacts/search", json={}, headers={"Idempotency-Key": "k"})
    assert answer.status_code == 200 and "Idempotent-Replayed" not in answer.headers


# --- one record or effect per key --------------------------------------------------------------


def twice(client: Any, path: str, key: str, **request: Any) -> tuple[Any, Any]:
    """The same POST with the same key, two times; both answers (the same)."""
    headers = {"Idempotency-Key": key}
    first = client.post(path, headers=headers, **request)
    again = client.post(path, headers=headers, **request)
    assert first.status_code < 400, first.get_json()
    assert (again.status_code, again.get_json()) == (first.status_code, first.get_json())
    assert again.headers["Idempotent-Replayed"] == "true"
    return first, again


def other_body_refused(client: Any, path: str, key: str, **request: Any) -> None:
    answer = client.post(path, headers={"Idempotency-Key": key}, **request)
    assert answer.status_code == 422 and "another request" in answer.get_json()["detail"]


def count(app: Flask, table: str) -> int:
    with app.extensions["crm.db"].engine.connect() as connection:
        return connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_contacts_batch_create_import_and_merge_happen_once(apps):
    app = apps["contacts"]
    client, _ = caller(app)
    inputs = [{"email": f"p{n}@example.com", "first_name": f"P{n}"} for n in range(2)]
    twice(client, "/api/v1/contacts/batch/create", "batch", json={"inputs": inputs})
    assert count(app, "contacts") == 2
    other_body_refused(
        client, "/api/v1/contacts/batch/create", "batch", json={"inputs": inputs[:1]}
    )

    csv = b"first_name,last_name,email\nAda,Lovelace,ada@example.com\n"
    imported = {"data": csv, "content_type": "text/csv"}
    twice(client, "/api/v1/contacts/import", "import", **imported)
    assert count(app, "contacts") == 3

    keep_id, duplicate_id = (c.get_json()["id"] for c in _two_contacts(client))
    merge = f"/api/v1/contacts/{keep_id}/merge"
    twice(client, merge, "merge", json={"duplicate_id": duplicate_id})
    assert len(outbox_events(app.extensions["crm.db"], "contact.merged")) == 1


def _two_contacts(client: Any) -> list[Any]:
    made = [client.post("/api/v1/contacts", json={"email": f"m{n}@example.com"}) for n in (1, 2)]
    assert all(answer.status_code == 201 for answer in made)
    return made


def test_deals_are_won_lost_and_reopened_once_per_key(apps):
    app = apps["sales"]
    client, _ = caller(app)
    deal = client.post("/api/v1/deals", json={"name": "Deal", "amount": "100.00"}).get_json()
    url, db = f"/api/v1/deals/{deal['id']}", app.extensions["crm.db"]
    twice(client, f"{url}/win", "win")
    twice(client, f"{url}/reopen", "reopen")
    twice(client, f"{url}/lose", "lose", json={"reason": "price"})
    other_body_refused(client, f"{url}/lose", "lose", json={"reason": "timing"})
    for event_type in ("deal.won", "deal.reopened", "deal.lost"):
        assert len(outbox_events(db, event_type)) == 1, event_type


def test_a_task_is_completed_once_per_key(apps):
    app = apps["sales"]
    client, _ = caller(app)
    task = client.post("/api/v1/tasks", json={"title": "Call Ada"}).get_json()
    twice(client, f"/api/v1/tasks/{task['id']}/complete", "done")
    assert len(outbox_events(app.extensions["crm.db"], "task.completed")) == 1


def test_a_ticket_is_assigned_once_per_key(apps):
    app = apps["support"]
    client, _ = caller(app)
    ticket = client.post(
        "/api/v1/tickets",
        json={"subject": "Help", "requester": {"email": "ada@example.com", "name": "Ada"}},
    ).get_json()
    url = f"/api/v1/tickets/{ticket['id']}/assign"
    twice(client, url, "assign", json={"assignee_id": ADMIN_ID})
    assert len(outbox_events(app.extensions["crm.db"], "ticket.assigned")) == 1
    other_body_refused(client, url, "assign", json={"assignee_id": None})


def test_the_gateway_makes_one_user_and_one_api_key_per_key(apps):
    app = apps["gateway"]
    client, _ = caller(app)
    user = {"email": "sam@example.com", "name": "Sam", "role": "sales", "password": "x" * 16}
    twice(client, "/api/v1/users", "user", json=user)
    assert count(app, "users") == 2  # the admin and Sam
    other_body_refused(client, "/api/v1/users", "user", json={**user, "name": "Samuel"})

    first, _again = twice(
        client, "/api/v1/api-keys", "key", json={"name": "shop", "role": "viewer"}
    )
    assert count(app, "api_keys") == 1 and first.get_json()["key"]
