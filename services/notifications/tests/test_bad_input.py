"""Every notifications write route (found from the URL map) answers bad input with a problem,
and a refused write changes nothing: no row, no outbox event, no email queued."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from services.notifications.app import create_app
from services.notifications.models import WebhookDelivery
from services.notifications.webhooks import on_any_event
from shared.testing import (
    assert_bad_bodies_refused,
    make_event,
    route_path,
    route_placeholders,
    table_snapshot,
    write_routes,
)

TEMPLATE = {"name": "welcome", "subject": "Hi {{ name }}", "body_text": "Hello {{ name }}!"}
HOOK = {"url": "https://hooks.example.com/crm", "event_types": ["deal.won"]}


WRITES = write_routes(create_app)
WITH_BODY = [(m, r) for m, r in WRITES if m in ("POST", "PATCH")]
BY_ID = [(m, r) for m, r in WRITES if "<uuid:" in r]


@pytest.fixture
def ids(client, db) -> dict[str, str]:
    """One record of every kind, so each route's ids name something real."""
    template = client.post("/api/v1/templates", json=TEMPLATE)
    hook = client.post("/api/v1/webhooks", json=HOOK)
    assert template.status_code == hook.status_code == 201, hook.get_json()
    event = make_event("deal.won", {"n": 1})
    with db.session() as session:
        on_any_event(session, event)
        delivery = session.scalars(
            sa.select(WebhookDelivery).where(WebhookDelivery.event_id == event.id)
        ).one()
        delivery.status, delivery.next_attempt_at = "failed", None
        delivery_id = delivery.id
    return {
        "template_id": template.get_json()["id"],
        "webhook_id": hook.get_json()["id"],
        "delivery_id": delivery_id,
        "reminder_id": str(uuid.uuid4()),  # none exists: DELETE is only swept for a 404
    }


def test_every_write_route_is_swept():
    assert len(WITH_BODY) >= 7 and len(BY_ID) >= 7
    names = {"template_id", "webhook_id", "delivery_id", "reminder_id"}
    for _, rule in WRITES:
        assert route_placeholders(rule) <= names, rule


@pytest.mark.parametrize(("method", "rule"), WITH_BODY)
def test_bad_bodies_are_refused_and_change_nothing(client, db, ids, method, rule):
    before = table_snapshot(db)
    assert_bad_bodies_refused(client, method, route_path(rule, ids))
    assert table_snapshot(db) == before


@pytest.mark.parametrize(("method", "rule"), BY_ID)
def test_unknown_ids_are_404_and_change_nothing(client, db, ids, method, rule):
    before = table_snapshot(db)
    unknown = {name: str(uuid.uuid4()) for name in ids}
    response = client.open(route_path(rule, unknown), method=method, json={})
    assert response.status_code == 404, (rule, response.get_data(as_text=True))
    assert response.mimetype == "application/problem+json"
    assert table_snapshot(db) == before


@pytest.mark.parametrize(
    ("rule", "body", "field"),
    [
        ("/api/v1/messages", {"to": "not an address", "subject": "s", "body_text": "b"}, "to"),
        (
            "/api/v1/messages",
            {"to": "a@example.com\r\nBcc: b@example.com", "subject": "s", "body_text": "b"},
            "to",
        ),
        ("/api/v1/templates", {**TEMPLATE, "subject": "{{ unclosed"}, "subject"),
        ("/api/v1/webhooks", {**HOOK, "url": "ftp://hooks.example.com/"}, "url"),
    ],
)
def test_an_invalid_write_is_a_422_naming_the_field_and_changes_nothing(
    client, db, ids, rule, body, field
):
    before = table_snapshot(db)
    response = client.post(rule, json=body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert field in response.get_json()["errors"]
    assert table_snapshot(db) == before
