"""Every contacts endpoint (found from the URL map) answers bad input with a problem, no change."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from services.contacts.app import create_app

UNKNOWN = "5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11"
# Endpoints whose body is not JSON.
NOT_JSON = {"/api/v1/contacts/import"}


def api_routes() -> list[tuple[str, str]]:
    app = create_app({"database_url": "sqlite://"})
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                routes.append((method, rule.rule))
    return sorted(routes)


ROUTES = api_routes()
WRITES = [(m, r) for m, r in ROUTES if m in ("POST", "PATCH") and r not in NOT_JSON]
WITH_ID = [(m, r) for m, r in ROUTES if "<uuid:" in r]


def path_for(rule: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        rule = rule.replace(f"<uuid:{name}>", value)
    return rule


def snapshot(db) -> dict[str, list]:
    """Every row of every table: the proof that a refused request changed nothing."""
    with db.engine.connect() as connection:
        return {
            table.name: sorted(map(repr, connection.execute(sa.select(table))))
            for table in db.metadata.sorted_tables
        }


@pytest.fixture
def ids(client, make_contact) -> dict[str, str]:
    contact = make_contact()
    note = client.post(f"/api/v1/contacts/{contact['id']}/notes", json={"body": "n"}).get_json()
    company = client.post("/api/v1/companies", json={"name": "Acme"}).get_json()
    field = client.post("/api/v1/custom-fields", json={"name": "f", "type": "text"}).get_json()
    return {
        "contact_id": contact["id"],
        "note_id": note["id"],
        "company_id": company["id"],
        "field_id": field["id"],
    }


def test_every_write_endpoint_is_covered():
    assert len(WRITES) >= 10 and len(WITH_ID) >= 12


@pytest.mark.parametrize(("method", "rule"), WRITES)
@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{broken", 400),
        (b"\xff\xfe not utf-8", 400),
        (b'{"surely_not_a_field": 1}', 422),
    ],
)
def test_bad_bodies_are_refused_and_change_nothing(client, db, ids, method, rule, body, status):
    before = snapshot(db)
    response = client.open(
        path_for(rule, ids), method=method, data=body, content_type="application/json"
    )
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert snapshot(db) == before


@pytest.mark.parametrize(("method", "rule"), WRITES + [("POST", "/api/v1/contacts/import")])
def test_oversize_bodies_are_refused_with_413(client, db, ids, method, rule):
    before = snapshot(db)
    huge = b'{"x": "' + b"a" * (3 * 1024 * 1024) + b'"}'
    kind = "text/csv" if rule in NOT_JSON else "application/json"
    response = client.open(path_for(rule, ids), method=method, data=huge, content_type=kind)
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert snapshot(db) == before


@pytest.mark.parametrize(("method", "rule"), WITH_ID)
def test_unknown_ids_are_404_and_change_nothing(client, db, ids, method, rule):
    before = snapshot(db)
    unknown = {name: str(uuid.uuid4()) for name in ids}
    body = {"body": "x"} if rule.endswith("notes") or "notes/" in rule else {}
    if rule.endswith("/interactions"):
        body = {"kind": "call"}
    if rule.endswith("/merge"):
        body = {"duplicate_id": ids["contact_id"]}
    response = client.open(path_for(rule, unknown), method=method, json=body)
    assert response.status_code == 404, (rule, response.get_data(as_text=True))
    assert response.mimetype == "application/problem+json"
    assert snapshot(db) == before


@pytest.mark.parametrize(("method", "rule"), WITH_ID)
def test_malformed_ids_are_404(client, method, rule):
    response = client.open(rule.replace("<uuid:", "x").replace(">", "y"), method=method, json={})
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_nul_characters_in_a_body_are_422_and_change_nothing(client, db):
    before = snapshot(db)
    response = client.post("/api/v1/contacts", json={"first_name": "A\u0000da"})
    assert response.status_code == 422
    assert response.get_json()["errors"] == {
        "first_name": ["Text cannot contain NUL (\\u0000) characters."]
    }
    assert snapshot(db) == before


def test_nul_characters_in_query_parameters_are_422(client):
    response = client.get("/api/v1/contacts?q=a%00b")
    assert response.status_code == 422 and "q" in response.get_json()["errors"]
    assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize("value", ["1e999999", "-1e16", "NaN", "Infinity"])
def test_search_numbers_out_of_range_are_422(client, value):
    search = {
        "filter_groups": [
            {"filters": [{"field": "lifetime_value", "operator": "gt", "value": value}]}
        ]
    }
    response = client.post("/api/v1/contacts/search", json=search)
    assert response.status_code == 422


def test_a_cursor_crafted_with_a_value_of_the_wrong_type_is_a_4xx(client):
    from services.contacts.queries import CONTACT_SORTS
    from shared.pagination import encode_cursor, parse_sort

    sort = parse_sort("-created_at", CONTACT_SORTS, "-created_at")
    cursor = encode_cursor(sort, ["not a time", "not an id"])
    response = client.get(f"/api/v1/contacts?cursor={cursor}")
    assert 400 <= response.status_code < 500


def test_search_times_with_an_offset_compare_in_utc(client, make_contact):
    contact = make_contact()
    created = contact["created_at"]  # ...Z
    from datetime import datetime, timedelta, timezone

    moment = datetime.fromisoformat(created.replace("Z", "+00:00"))
    # The same instant written in UTC+02:00, one second later: the contact is before it.
    later = (moment + timedelta(seconds=1)).astimezone(timezone(timedelta(hours=2)))
    search = {
        "filter_groups": [
            {"filters": [{"field": "created_at", "operator": "lt", "value": later.isoformat()}]}
        ]
    }
    items = client.post("/api/v1/contacts/search", json=search).get_json()["items"]
    assert [item["id"] for item in items] == [contact["id"]]
