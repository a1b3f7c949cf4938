"""Every sales endpoint (found from the URL map) answers bad input with a problem, no change."""

from __future__ import annotations

import pytest

from services.sales.tests.api_helpers import DEFAULT_PIPELINE, DEFAULT_STAGE_IDS, snapshot


def _routes() -> list[tuple[str, str]]:
    from services.sales.app import create_app

    app = create_app({"database_url": "sqlite://"})
    routes = sorted(
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    )
    app.extensions["crm.db"].dispose()
    return routes


ROUTES = _routes()
WRITES = [(m, r) for m, r in ROUTES if m in ("POST", "PATCH", "PUT")]


@pytest.fixture
def ids(client) -> dict[str, str]:
    """One record of every kind, so each route's ids name something real."""
    lead = client.post("/api/v1/leads", json={"email": "sweep@example.com"}).get_json()
    deal = client.post("/api/v1/deals", json={"name": "Sweep"}).get_json()
    task = client.post("/api/v1/tasks", json={"title": "Sweep"}).get_json()
    rule = client.post(
        "/api/v1/lead-scoring-rules",
        json={"name": "VP", "field": "title", "operator": "contains", "value": "VP", "points": 5},
    ).get_json()
    return {
        "lead_id": lead["id"],
        "deal_id": deal["id"],
        "task_id": task["id"],
        "rule_id": rule["id"],
        "pipeline_id": DEFAULT_PIPELINE,
        "stage_id": DEFAULT_STAGE_IDS[1],
    }


def path_for(rule: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        rule = rule.replace(f"<uuid:{name}>", value).replace(f"<{name}>", value)
    assert "<" not in rule, f"no id for {rule}"
    return rule


def test_every_write_endpoint_is_swept():
    assert len(WRITES) >= 25


@pytest.mark.parametrize(("method", "rule"), WRITES)
@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{broken", 400),
        (b"\xff\xfe not utf-8", 400),
        (b'{"surely_not_a_field": 1}', 422),
        (b'{"name": "a\\u0000b", "title": "a\\u0000b", "email": "a\\u0000b@x.io"}', 422),
    ],
)
def test_bad_bodies_are_refused_and_change_nothing(client, db, ids, method, rule, body, status):
    before = snapshot(db)
    response = client.open(
        path_for(rule, ids), method=method, data=body, content_type="application/json"
    )
    assert response.status_code == status, (rule, response.get_data(as_text=True))
    assert response.mimetype == "application/problem+json"
    assert snapshot(db) == before
