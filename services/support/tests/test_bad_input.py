"""Every support endpoint (found from the URL map) answers bad input with a problem, no change."""

from __future__ import annotations

import re
import uuid

import pytest

from services.support.csat import csat_token
from services.support.tests.ticket_helpers import new_ticket, snapshot, support_routes
from shared.subject_export import PATH_PREFIX as SUBJECT_EXPORTS

ROUTES = support_routes()
WRITES = [(m, r) for m, r in ROUTES if m in ("POST", "PATCH", "PUT")]
# Routes naming one record: an unknown id must be a 404, not a 500 or an empty answer.
# (A person's export names a person, not a record: one support knows nothing of has an
# empty export; test_subject_export.py covers it.)
BY_ID = [
    (m, r)
    for m, r in ROUTES
    if m in ("GET", "DELETE") and "<" in r and not r.startswith(SUBJECT_EXPORTS)
]
# Lists and reports: an unknown query parameter is a typo the client must hear about.
# (`/tickets/{id}/csat` is one record, the ticket's rating, though its path ends plainly.)
LISTS = [(m, r) for m, r in ROUTES if m == "GET" and not r.endswith((">", "/csat"))]
PLACEHOLDER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


@pytest.fixture
def ids(app, client) -> dict[str, str]:
    """One record of every kind, so each route's ids name something real."""
    ticket = new_ticket(client)
    comment = client.post(f"/api/v1/tickets/{ticket['id']}/comments", json={"body": "Hi"})
    policy = client.post(
        "/api/v1/sla-policies",
        json={
            "name": "Sweep",
            "priority": "low",
            "first_response_minutes": 60,
            "resolution_minutes": 480,
        },
    )
    assert comment.status_code == policy.status_code == 201, policy.get_json()
    return {
        "ticket_id": ticket["id"],
        "comment_id": comment.get_json()["id"],
        "policy_id": policy.get_json()["id"],
        "token": csat_token(app.extensions["crm.settings"], ticket["id"]),
    }


def path_for(rule: str, ids: dict[str, str]) -> str:
    path = PLACEHOLDER.sub(lambda match: ids[match.group(1)], rule)
    assert "<" not in path, f"no id for {rule}"
    return path


def unknown_ids() -> dict[str, str]:
    """Ids that name nothing: fresh UUIDs, and a rating token nobody signed."""
    names = ("ticket_id", "comment_id", "policy_id", "contact_id")
    return {**{name: str(uuid.uuid4()) for name in names}, "token": "not-a-signed-token"}


def test_every_route_is_swept():
    assert len(WRITES) >= 10 and len(BY_ID) >= 5 and len(LISTS) >= 2
    for _, rule in ROUTES:
        path_for(rule, unknown_ids())  # every placeholder has an id to fill it


@pytest.mark.parametrize(("method", "rule"), WRITES)
@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{broken", 400),
        (b"\xff\xfe not utf-8", 400),
        (b"", 400),
        (b"null", 400),
        (b"[]", 400),
        (b'"text"', 400),
        (b'{"surely_not_a_field": 1}', 422),
        (b'{"subject": "a\\u0000b", "body": "a\\u0000b", "name": "a\\u0000b"}', 422),
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


def test_deeply_nested_json_is_a_400_not_a_500(client, db):
    before = snapshot(db)
    response = client.post("/api/v1/tickets", data=b"[" * 100_000, content_type="application/json")
    assert response.status_code == 400
    assert snapshot(db) == before


@pytest.mark.parametrize(("method", "rule"), BY_ID)
def test_unknown_ids_are_404_and_change_nothing(client, db, ids, method, rule):
    before = snapshot(db)
    response = client.open(path_for(rule, unknown_ids()), method=method)
    assert response.status_code == 404, (rule, response.get_data(as_text=True))
    assert response.mimetype == "application/problem+json"
    assert snapshot(db) == before


@pytest.mark.parametrize(("method", "rule"), LISTS)
@pytest.mark.parametrize("query", ["surely_not_a_parameter=1", "limit=0", "limit=x"])
def test_lists_refuse_unknown_and_bad_parameters(client, ids, method, rule, query):
    response = client.open(f"{path_for(rule, ids)}?{query}", method=method)
    assert response.status_code == 422, (rule, response.get_data(as_text=True))
    assert response.mimetype == "application/problem+json"
