"""The segments API: CRUD with ETags, members and counts, static lists, roles, and bad input
on every write route answered 422 (or 404/409) without a change."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.marketing import replica
from services.marketing.tests.conftest import row_counts, token_for
from shared.testing import handle_event, make_event

BASE = "/api/v1/segments"
VIP = {"filter_groups": [{"filters": [{"field": "tags", "operator": "eq", "value": "vip"}]}]}
TABLES = ("segments", "segment_members")


def contact_ids(count: int) -> list[str]:
    return [f"00000000-0000-4000-8000-{index:012x}" for index in range(1, count + 1)]


@pytest.fixture
def people(app: Any, db: Any) -> list[str]:
    """Five replicated contacts; the first three tagged vip."""
    table = replica.handlers(app.extensions["crm.settings"])
    ids = contact_ids(5)
    for index, contact_id in enumerate(ids):
        data = {
            "id": contact_id,
            "email": f"person{index}@example.com",
            "first_name": f"Person {index}",
            "last_name": "Example",
            "lifecycle_stage": "lead",
            "tags": ["vip"] if index < 3 else [],
        }
        event = make_event(
            "contact.created", data, "contacts", aggregate_id=contact_id, aggregate_version=1
        )
        handle_event(db, table, event)
    return ids


def create(client: Any, **fields: Any) -> dict[str, Any]:
    body = {"name": "VIPs", "description": "Our best", "filter": VIP, **fields}
    response = client.post(BASE, json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def as_role(app: Any, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(app, role)}"}


def test_create_answers_the_segment_with_location_etag_and_count(client, people):
    response = client.post(BASE, json={"name": "VIPs", "filter": VIP})
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"{BASE}/{body['id']}"
    assert response.headers["ETag"] == '"1"'
    assert body["kind"] == "dynamic" and body["filter"] == VIP and body["member_count"] == 3
    assert body["version"] == 1 and body["created_at"].endswith("Z")
    fetched = client.get(f"{BASE}/{body['id']}")
    assert fetched.get_json() == body and fetched.headers["ETag"] == '"1"'


def test_members_are_paged_by_email_and_counted(client, people):
    segment = create(client)
    page = client.get(f"{BASE}/{segment['id']}/members?limit=2").get_json()
    assert [member["email"] for member in page["items"]] == [
        "person0@example.com",
        "person1@example.com",
    ]
    assert set(page["items"][0]) == {"id", "email", "first_name", "last_name", "lifecycle_stage"}
    rest = client.get(f"{BASE}/{segment['id']}/members?limit=2&cursor={page['next_cursor']}")
    assert [m["email"] for m in rest.get_json()["items"]] == ["person2@example.com"]
    assert rest.get_json()["next_cursor"] is None
    count = client.get(f"{BASE}/{segment['id']}/count").get_json()
    assert count == {"id": segment["id"], "member_count": 3}


def test_the_list_is_paged_and_filtered(client, people):
    for name in ("Alpha", "Beta", "Gamma"):
        create(client, name=name)
    client.post(BASE, json={"name": "Delta list", "kind": "static"})
    first = client.get(f"{BASE}?limit=2").get_json()
    assert [s["name"] for s in first["items"]] == ["Alpha", "Beta"]
    second = client.get(f"{BASE}?limit=2&cursor={first['next_cursor']}").get_json()
    assert [s["name"] for s in second["items"]] == ["Delta list", "Gamma"]
    static = client.get(f"{BASE}?kind=static").get_json()["items"]
    assert [s["name"] for s in static] == ["Delta list"] and static[0]["filter"] is None
    assert [s["name"] for s in client.get(f"{BASE}?q=gam").get_json()["items"]] == ["Gamma"]
    assert client.get(f"{BASE}?sort=-name&limit=1").get_json()["items"][0]["name"] == "Gamma"


def test_patch_changes_the_filter_with_if_match(client, people):
    segment = create(client)
    leads = {"filter_groups": [{"filters": [{"field": "tags", "operator": "neq", "value": "vip"}]}]}
    response = client.patch(
        f"{BASE}/{segment['id']}", json={"filter": leads}, headers={"If-Match": '"1"'}
    )
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    assert response.get_json()["member_count"] == 2
    stale = client.patch(f"{BASE}/{segment['id']}", json={"name": "x"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 409
    assert client.get(f"{BASE}/{segment['id']}").get_json()["name"] == "VIPs"


def test_delete_answers_204_then_404(client, people, db):
    segment = create(client)
    stale = client.delete(f"{BASE}/{segment['id']}", headers={"If-Match": '"7"'})
    assert stale.status_code == 409
    assert client.delete(f"{BASE}/{segment['id']}").status_code == 204
    for path in ("", "/members", "/count"):
        response = client.get(f"{BASE}/{segment['id']}{path}")
        assert response.status_code == 404 and response.mimetype == "application/problem+json"
    assert client.delete(f"{BASE}/{segment['id']}").status_code == 404


def test_a_static_list_takes_added_and_removed_members(client, people, db):
    segment = create(client, kind="static", filter=None)
    assert segment["member_count"] == 0 and segment["filter"] is None
    added = client.post(f"{BASE}/{segment['id']}/members", json={"contact_ids": people[3:]})
    assert added.status_code == 200 and added.get_json() == {"added": 2, "member_count": 2}
    again = client.post(f"{BASE}/{segment['id']}/members", json={"contact_ids": people[4:]})
    assert again.get_json() == {"added": 0, "member_count": 2}
    removed = client.delete(f"{BASE}/{segment['id']}/members/{people[3]}")
    assert removed.status_code == 204
    assert client.delete(f"{BASE}/{segment['id']}/members/{people[3]}").status_code == 404
    items = client.get(f"{BASE}/{segment['id']}/members").get_json()["items"]
    assert [member["id"] for member in items] == [people[4]]
    assert client.get(f"{BASE}/{segment['id']}").get_json()["version"] == 3


# --- roles ------------------------------------------------------------------------------


def test_every_role_reads_but_only_marketing_and_admin_change(app, client, people):
    segment = create(client)
    for role in ("viewer", "sales", "support", "marketing"):
        headers = as_role(app, role)
        assert app.test_client().get(BASE, headers=headers).status_code == 200
        members = app.test_client().get(f"{BASE}/{segment['id']}/members", headers=headers)
        assert members.status_code == 200
    for role in ("viewer", "sales", "support"):
        headers = as_role(app, role)
        anyone = app.test_client()
        assert (
            anyone.post(BASE, json={"name": "x", "filter": VIP}, headers=headers).status_code == 403
        )
        patch = anyone.patch(f"{BASE}/{segment['id']}", json={"name": "x"}, headers=headers)
        assert patch.status_code == 403
        assert anyone.delete(f"{BASE}/{segment['id']}", headers=headers).status_code == 403
    marketing = app.test_client()
    made = marketing.post(
        BASE, json={"name": "m", "filter": VIP}, headers=as_role(app, "marketing")
    )
    assert made.status_code == 201


def test_without_a_token_the_answer_is_401(anonymous):
    assert anonymous.get(BASE).status_code == 401
    assert anonymous.post(BASE, json={"name": "x", "filter": VIP}).status_code == 401


# --- bad input changes nothing ----------------------------------------------------------

BAD_CREATES = [
    ({"name": "x", "filter": VIP, "colour": "red"}, "colour"),
    ({"filter": VIP}, "name"),
    ({"name": "   ", "filter": VIP}, "name"),
    ({"name": "x"}, "filter"),
    ({"name": "x", "kind": "static", "filter": VIP}, "filter"),
    ({"name": "x", "kind": "smart", "filter": VIP}, "kind"),
    ({"name": "x", "filter": {"filter_groups": [{"filters": []}]}}, "filter"),
    ({"name": "x", "filter": {"groups": []}}, "filter"),
    ({"name": "x", "filter": {"filter_groups": [{"filters": [{"field": "tags"}]}]}}, "filter"),
    (
        {
            "name": "x",
            "filter": {
                "filter_groups": [
                    {"filters": [{"field": "tags", "operator": "like", "value": "vip"}]}
                ]
            },
        },
        "filter",
    ),
    (
        {
            "name": "x",
            "filter": {
                "filter_groups": [
                    {"filters": [{"field": "shoe_size", "operator": "eq", "value": 42}]}
                ]
            },
        },
        "filter",
    ),
    (
        {
            "name": "x",
            "filter": {
                "filter_groups": [
                    {
                        "filters": [
                            {"field": "last_activity_at", "operator": "lt", "value": "now-3 days"}
                        ]
                    }
                ]
            },
        },
        "filter",
    ),
    ({"name": "x\u0000", "filter": VIP}, "name"),
]


@pytest.mark.parametrize(("body", "field"), BAD_CREATES)
def test_a_bad_create_is_a_422_naming_the_field_and_changes_nothing(client, db, body, field):
    before = row_counts(db, *TABLES)
    response = client.post(BASE, json=body)
    assert response.status_code == 422, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]
    assert row_counts(db, *TABLES) == before


def test_an_unknown_filter_field_is_named_in_the_answer(client):
    bad = {"field": "shoe_size", "operator": "eq", "value": 42}
    groups = [{"filters": [{"field": "email", "operator": "exists", "value": True}, bad]}]
    response = client.post(BASE, json={"name": "x", "filter": {"filter_groups": groups}})
    errors = response.get_json()["errors"]["filter"]["filter_groups"]["0"]["filters"]["1"]
    assert "shoe_size" in errors[0]


def test_malformed_json_is_a_400(client):
    response = client.post(BASE, data="{", content_type="application/json")
    assert response.status_code == 400


BAD_PATCHES = [
    ({"colour": "red"}, "colour", 422),
    ({"name": ""}, "name", 422),
    ({"kind": "static"}, "kind", 422),
    ({"filter": None}, "filter", 422),
    (
        {
            "filter": {
                "filter_groups": [
                    {"filters": [{"field": "tags", "operator": "gt", "value": "vip"}]}
                ]
            }
        },
        "filter",
        422,
    ),
]


@pytest.mark.parametrize(("body", "field", "status"), BAD_PATCHES)
def test_a_bad_patch_is_refused_and_changes_nothing(client, db, body, field, status):
    segment = create(client)
    response = client.patch(f"{BASE}/{segment['id']}", json=body)
    assert response.status_code == status, response.get_json()
    assert field in response.get_json()["errors"]
    assert client.get(f"{BASE}/{segment['id']}").get_json() == segment


def test_a_static_segment_takes_no_filter_in_a_patch(client, db):
    segment = create(client, kind="static", filter=None)
    response = client.patch(f"{BASE}/{segment['id']}", json={"filter": VIP})
    assert response.status_code == 422 and "filter" in response.get_json()["errors"]
    assert client.get(f"{BASE}/{segment['id']}").get_json()["version"] == 1


def test_writes_to_an_unknown_segment_are_404(client):
    missing = f"{BASE}/{uuid.uuid4()}"
    assert client.patch(missing, json={"name": "x"}).status_code == 404
    assert client.delete(missing).status_code == 404
    assert (
        client.post(f"{missing}/members", json={"contact_ids": contact_ids(1)}).status_code == 404
    )
    assert client.delete(f"{missing}/members/{uuid.uuid4()}").status_code == 404
    assert client.get(f"{BASE}/not-a-uuid").status_code == 404


def test_bad_member_additions_are_refused_and_change_nothing(client, db, people):
    static = create(client, kind="static", filter=None)
    dynamic = create(client)
    before = row_counts(db, *TABLES)
    path = f"{BASE}/{static['id']}/members"
    unknown = client.post(path, json={"contact_ids": [people[0], str(uuid.uuid4())]})
    assert unknown.status_code == 422
    assert list(unknown.get_json()["errors"]["contact_ids"]) == ["1"]
    for body in (
        {"contact_ids": []},
        {"contact_ids": ["nope"]},
        {"contact_ids": contact_ids(1001)},
        {"contact_ids": people[:1], "extra": 1},
        {},
    ):
        response = client.post(path, json=body)
        assert response.status_code == 422, body
    to_dynamic = client.post(f"{BASE}/{dynamic['id']}/members", json={"contact_ids": people[:1]})
    assert to_dynamic.status_code == 409
    off_dynamic = client.delete(f"{BASE}/{dynamic['id']}/members/{people[0]}")
    assert off_dynamic.status_code == 409
    assert row_counts(db, *TABLES) == before


def test_an_erased_contact_cannot_join_a_static_list(app, client, db, people):
    erased = make_event("contact.erased", {"id": people[0]}, "contacts", aggregate_id=people[0])
    handle_event(db, replica.handlers(app.extensions["crm.settings"]), erased)
    static = create(client, kind="static", filter=None)
    response = client.post(f"{BASE}/{static['id']}/members", json={"contact_ids": people[:1]})
    assert response.status_code == 422


def test_bad_list_parameters_are_422(client, people):
    segment = create(client)
    for query in ("?kind=smart", "?limit=0", "?sort=colour", "?cursor=xyz", "?colour=red"):
        assert client.get(f"{BASE}{query}").status_code == 422, query
    for query in ("?limit=500", "?cursor=xyz", "?sort=email"):
        response = client.get(f"{BASE}/{segment['id']}/members{query}")
        assert response.status_code == 422, query
