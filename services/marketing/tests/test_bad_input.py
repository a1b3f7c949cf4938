"""Every marketing write route (found from the URL map) answers bad input with a problem,
and a refused write changes nothing: no row, no outbox event."""

from __future__ import annotations

import uuid

import pytest

from services.marketing.app import create_app
from services.marketing.tests.automation_helpers import new_rule
from services.marketing.tests.campaign_helpers import add_contacts, new_campaign, static_segment
from services.marketing.tests.consent_helpers import add_list
from shared.testing import (
    assert_bad_bodies_refused,
    route_path,
    route_placeholders,
    table_snapshot,
    write_routes,
)

# Not JSON: the RFC 8058 one-click unsubscribe and the opt-in confirmation are form posts
# behind a signed link (tested below and in test_unsubscribe).
NOT_JSON = {"/api/v1/unsubscribe/<token>", "/api/v1/subscriptions/confirm/<token>"}


WRITES = write_routes(create_app)
WITH_BODY = [(m, r) for m, r in WRITES if m in ("POST", "PATCH") and r not in NOT_JSON]
BY_ID = [(m, r) for m, r in WRITES if "<uuid:" in r]


@pytest.fixture
def ids(client, db) -> dict[str, str]:
    """One record of every kind, so each route's ids name something real."""
    [contact_id] = add_contacts(db, 1)
    segment_id = static_segment(db, [contact_id])
    campaign = new_campaign(client, segment_id)
    rule = new_rule(client)
    suppressed = client.post("/api/v1/suppressions", json={"email": "kept@example.com"})
    assert suppressed.status_code in (200, 201), suppressed.get_json()
    return {
        "contact_id": contact_id,
        "segment_id": segment_id,
        "campaign_id": campaign["id"],
        "rule_id": rule["id"],
        "list_id": add_list(db),
        "email": "kept@example.com",
        "token": "not-a-signed-token",
    }


def test_every_write_route_is_swept():
    assert len(WITH_BODY) >= 12 and len(BY_ID) >= 10
    names = {"contact_id", "segment_id", "campaign_id", "rule_id", "list_id", "email", "token"}
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
    unknown = {**ids, **{name: str(uuid.uuid4()) for name in ids if name.endswith("_id")}}
    body = {"contact_ids": [ids["contact_id"]]} if rule.endswith("/members") else {}
    response = client.open(route_path(rule, unknown), method=method, json=body)
    assert response.status_code == 404, (rule, response.get_data(as_text=True))
    assert response.mimetype == "application/problem+json"
    assert table_snapshot(db) == before


def test_a_forged_unsubscribe_token_is_refused_and_changes_nothing(anonymous, db, ids):
    before = table_snapshot(db)
    response = anonymous.post(
        "/api/v1/unsubscribe/not-a-signed-token", data={"List-Unsubscribe": "One-Click"}
    )
    assert 400 <= response.status_code < 500
    assert table_snapshot(db) == before


def test_an_invalid_write_is_a_422_naming_the_field_and_changes_nothing(client, db, ids):
    before = table_snapshot(db)
    response = client.post("/api/v1/segments", json={"name": "", "kind": "static"})
    assert response.status_code == 422 and "name" in response.get_json()["errors"]
    response = client.post("/api/v1/suppressions", json={"email": "not an address"})
    assert response.status_code == 422 and "email" in response.get_json()["errors"]
    assert table_snapshot(db) == before
