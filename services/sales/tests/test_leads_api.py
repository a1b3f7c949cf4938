"""The leads HTTP API: create, read, change, move, delete, list, search; on both databases."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from services.sales import leads
from services.sales.tests.conftest import ADMIN_ID, SALES_ID, row_counts, token_for

TABLES = ("leads", "lead_behaviours", "outbox", "deals")
UNKNOWN = "5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11"


def outbox_events(db: Any, event_type: str | None = None) -> list[dict[str, Any]]:
    """The events recorded so far (oldest first), optionally of one type."""
    table = db.metadata.tables["outbox"]
    statement = sa.select(table.c.event_type, table.c.payload).order_by(table.c.position)
    with db.engine.connect() as connection:
        rows = connection.execute(statement).all()
    return [json.loads(payload) for kind, payload in rows if event_type in (None, kind)]


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["title"]
    return body


def new_lead(client: Any, **fields: Any) -> dict[str, Any]:
    """Create a lead through the API (a unique email unless one is given)."""
    body = {"first_name": "Ada", "last_name": "Lovelace", "email": f"{uuid.uuid4().hex}@acme.io"}
    body.update(fields)
    response = client.post("/api/v1/leads", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def move(client: Any, lead: dict[str, Any], status: str, **fields: Any) -> Any:
    return client.patch(f"/api/v1/leads/{lead['id']}", json={"status": status, **fields})


# --- create ----------------------------------------------------------------------------------


def test_creating_a_lead_answers_201_with_location_etag_and_records_lead_created(client, db):
    response = client.post(
        "/api/v1/leads",
        json={
            "first_name": "Grace",
            "last_name": "Hopper",
            "email": "Grace@Navy.MIL",
            "company_name": "US Navy",
            "custom_fields": {"fleet": "Pacific", "ships": 3},
        },
        headers={"X-Request-ID": "lead-create-1"},
    )
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"/api/v1/leads/{body['id']}"
    assert response.headers["ETag"] == '"1"'
    assert body["email"] == "Grace@Navy.MIL"
    assert body["status"] == "new" and body["source"] == "api"
    assert body["owner_id"] == ADMIN_ID
    assert body["score"] == 0 and body["version"] == 1
    assert body["custom_fields"] == {"fleet": "Pacific", "ships": 3}
    assert body["created_at"].endswith("Z")
    [event] = outbox_events(db, "lead.created")
    assert event["aggregate_id"] == body["id"] and event["aggregate_version"] == 1
    assert event["correlation_id"] == "lead-create-1"
    assert event["data"]["lead_id"] == body["id"]
    assert event["data"]["email"] == "Grace@Navy.MIL"


def test_a_lead_may_name_its_owner_and_id(client):
    lead_id = str(uuid.uuid4())
    body = new_lead(client, id=lead_id, owner_id=SALES_ID, source="referral")
    assert body["id"] == lead_id and body["owner_id"] == SALES_ID and body["source"] == "referral"
    unowned = new_lead(client, owner_id=None)
    assert unowned["owner_id"] is None
    again = client.post("/api/v1/leads", json={"id": lead_id, "first_name": "Twin"})
    assert_problem(again, 409)


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ("{not json", 400, None),
        ("[1, 2]", 400, None),
        ("", 400, None),
        ('{"first_name": "A", "favourite_colour": "blue"}', 422, "favourite_colour"),
        ('{"first_name": "A", "score": 100}', 422, "score"),
        ('{"first_name": "A", "version": 3}', 422, "version"),
        ('{"first_name": 12}', 422, "first_name"),
        ('{"first_name": "A", "email": "not-an-email"}', 422, "email"),
        ('{"first_name": "A", "status": "hot"}', 422, "status"),
        ('{"first_name": "A", "owner_id": "nope"}', 422, "owner_id"),
        ('{"first_name": "A", "phone": "12"}', 422, "phone"),
        ('{"first_name": "A", "source": "web form!"}', 422, "source"),
        ('{"first_name": "A", "custom_fields": {"Bad Name": 1}}', 422, "custom_fields"),
        ('{"first_name": "A", "custom_fields": {"x": {"nested": 1}}}', 422, "custom_fields"),
        ('{"first_name": "A", "unqualified_reason": "no budget"}', 422, "unqualified_reason"),
        ('{"first_name": "' + "x" * 101 + '"}', 422, "first_name"),
        ('{"first_name": "A", "status": "converted"}', 409, None),
        ("{}", 422, None),
    ],
)
def test_bad_lead_input_is_refused_and_changes_nothing(client, db, payload, status, field):
    before = row_counts(db, *TABLES)
    response = client.post("/api/v1/leads", data=payload, content_type="application/json")
    body = assert_problem(response, status)
    if field:
        assert field in body["errors"]
    assert row_counts(db, *TABLES) == before


def test_an_open_lead_with_the_same_email_is_a_409_naming_it(client, db):
    first = new_lead(client, email="dup@example.org")
    before = row_counts(db, *TABLES)
    response = client.post("/api/v1/leads", json={"first_name": "B", "email": "DUP@Example.org"})
    body = assert_problem(response, 409)
    assert first["id"] in body["detail"] and "email" in body["errors"]
    assert row_counts(db, *TABLES) == before


def test_converted_and_unqualified_leads_do_not_block_a_new_lead_with_their_email(client):
    unqualified = new_lead(client, email="back@example.org")
    assert move(client, unqualified, "unqualified").status_code == 200
    assert new_lead(client, email="back@example.org")["status"] == "new"
    converted = new_lead(client, email="again@example.org")
    assert client.post(f"/api/v1/leads/{converted['id']}/convert", json={}).status_code == 200
    assert new_lead(client, email="AGAIN@example.org")["status"] == "new"


def test_losing_the_race_for_an_open_email_is_still_a_409_naming_the_winner(
    client, db, monkeypatch
):
    winner = new_lead(client, email="race@example.org")
    # The check passed in both requests; only the database's unique index sees the clash.
    monkeypatch.setattr(leads, "_ensure_no_open_duplicate", lambda *args: None)
    before = row_counts(db, *TABLES)
    response = client.post("/api/v1/leads", json={"email": "race@example.org"})
    assert winner["id"] in assert_problem(response, 409)["detail"]
    assert row_counts(db, *TABLES) == before


def test_idempotency_key_returns_the_first_lead_not_a_second(client, db):
    headers = {"Idempotency-Key": "lead-once"}
    first = client.post("/api/v1/leads", json={"first_name": "Once"}, headers=headers)
    again = client.post("/api/v1/leads", json={"first_name": "Once"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.get_json() == again.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert row_counts(db, "leads")["leads"] == 1


# --- read, change, delete --------------------------------------------------------------------


def test_reading_a_lead_answers_its_etag_and_score_breakdown(client):
    lead = new_lead(client)
    response = client.get(f"/api/v1/leads/{lead['id']}")
    assert response.status_code == 200
    assert response.headers["ETag"] == '"1"'
    body = response.get_json()
    assert body["id"] == lead["id"]
    assert body["score_breakdown"] == {"rules": [], "behaviour": [], "total": 0}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/leads/{id}"),
        ("GET", "/api/v1/leads/{id}/score"),
        ("PATCH", "/api/v1/leads/{id}"),
        ("DELETE", "/api/v1/leads/{id}"),
        ("POST", "/api/v1/leads/{id}/convert"),
    ],
)
def test_unknown_or_malformed_lead_ids_are_404_and_change_nothing(client, db, method, path):
    before = row_counts(db, *TABLES)
    for ident in (UNKNOWN, "not-a-uuid"):
        response = client.open(path.format(id=ident), method=method, json={})
        assert_problem(response, 404)
    assert row_counts(db, *TABLES) == before


def test_patching_a_lead_changes_fields_bumps_the_version_and_names_the_changes(client, db):
    lead = new_lead(client, title="Engineer")
    response = client.patch(
        f"/api/v1/leads/{lead['id']}",
        json={"title": "CTO", "phone": "+49 30 1234", "custom_fields": {"size": "large"}},
    )
    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'
    body = response.get_json()
    assert body["title"] == "CTO" and body["version"] == 2
    assert body["updated_at"] >= lead["updated_at"]
    [event] = outbox_events(db, "lead.updated")
    assert sorted(event["data"]["changed"]) == ["custom_fields", "phone", "title"]
    assert event["aggregate_version"] == 2
    removed = client.patch(f"/api/v1/leads/{lead['id']}", json={"custom_fields": {"size": None}})
    assert removed.get_json()["custom_fields"] == {}


def test_a_patch_changing_nothing_records_nothing(client, db):
    lead = new_lead(client, title="CTO")
    response = client.patch(f"/api/v1/leads/{lead['id']}", json={"title": "CTO"})
    assert response.get_json()["version"] == 1
    assert outbox_events(db, "lead.updated") == []


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"email": "nope"}, 422),
        ({"id": UNKNOWN}, 422),
        ({"score": 10}, 422),
        ({"owner_id": "x"}, 422),
        ({"status": "converted"}, 409),
        ({"status": "working", "unqualified_reason": "no budget"}, 422),
    ],
)
def test_bad_patches_are_refused_and_change_nothing(client, db, payload, status):
    lead = new_lead(client)
    before = row_counts(db, *TABLES)
    assert_problem(client.patch(f"/api/v1/leads/{lead['id']}", json=payload), status)
    assert client.get(f"/api/v1/leads/{lead['id']}").get_json()["version"] == 1
    assert row_counts(db, *TABLES) == before


def test_if_match_guards_patch_and_delete(client, db):
    lead = new_lead(client)
    path = f"/api/v1/leads/{lead['id']}"
    stale = client.patch(path, json={"title": "X"}, headers={"If-Match": '"7"'})
    assert "version" in assert_problem(stale, 409)["detail"]
    ok = client.patch(path, json={"title": "X"}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200
    assert_problem(client.delete(path, headers={"If-Match": '"1"'}), 409)
    assert_problem(client.patch(path, json={}, headers={"If-Match": "soon"}), 400)
    assert client.delete(path, headers={"If-Match": '"2"'}).status_code == 204


def test_changing_the_email_to_another_open_leads_email_is_a_409(client, db):
    other = new_lead(client, email="taken@example.org")
    lead = new_lead(client)
    response = client.patch(f"/api/v1/leads/{lead['id']}", json={"email": "TAKEN@example.org"})
    assert other["id"] in assert_problem(response, 409)["detail"]


def test_deleting_a_lead_answers_204_and_records_lead_deleted(client, db):
    lead = new_lead(client)
    response = client.delete(f"/api/v1/leads/{lead['id']}")
    assert response.status_code == 204
    assert_problem(client.get(f"/api/v1/leads/{lead['id']}"), 404)
    [event] = outbox_events(db, "lead.deleted")
    assert event["data"]["lead_id"] == lead["id"] and event["aggregate_version"] == 2


# --- status flow -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        ["working", "qualified", "working", "unqualified", "working"],
        ["qualified"],
        ["unqualified", "working", "qualified"],
    ],
)
def test_allowed_status_moves_record_status_changed(client, db, path):
    lead = new_lead(client)
    previous = "new"
    for status in path:
        response = move(client, lead, status)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["status"] == status
        event = outbox_events(db, "lead.status_changed")[-1]
        assert (event["data"]["from"], event["data"]["to"]) == (previous, status)
        previous = status
    assert len(outbox_events(db, "lead.status_changed")) == len(path)
    qualified = outbox_events(db, "lead.qualified")
    assert len(qualified) == path.count("qualified")
    assert all(event["data"]["reason"] == "manual" for event in qualified)


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ([], "converted"),
        (["working"], "new"),
        (["qualified"], "unqualified"),
        (["qualified"], "new"),
        (["unqualified"], "qualified"),
        (["unqualified"], "new"),
    ],
)
def test_forbidden_status_moves_are_409_and_change_nothing(client, db, path, refused):
    lead = new_lead(client)
    for status in path:
        assert move(client, lead, status).status_code == 200
    before = row_counts(db, *TABLES)
    body = assert_problem(move(client, lead, refused), 409)
    assert refused in body["detail"]
    assert row_counts(db, *TABLES) == before


def test_a_converted_lead_cannot_change(client, db):
    lead = new_lead(client)
    client.post(f"/api/v1/leads/{lead['id']}/convert", json={"create_deal": False})
    before = row_counts(db, *TABLES)
    assert_problem(move(client, lead, "working"), 409)
    assert_problem(client.patch(f"/api/v1/leads/{lead['id']}", json={"title": "X"}), 409)
    assert row_counts(db, *TABLES) == before


def test_unqualifying_keeps_the_reason_and_reopening_clears_it(client):
    lead = new_lead(client)
    body = move(client, lead, "unqualified", unqualified_reason="No budget").get_json()
    assert body["unqualified_reason"] == "No budget"
    reason = client.patch(f"/api/v1/leads/{lead['id']}", json={"unqualified_reason": "Gone"})
    assert reason.get_json()["unqualified_reason"] == "Gone"
    reopened = move(client, lead, "working").get_json()
    assert reopened["status"] == "working" and reopened["unqualified_reason"] is None


def test_reopening_is_refused_while_another_open_lead_has_the_email(client, db):
    old = new_lead(client, email="twice@example.org")
    move(client, old, "unqualified")
    current = new_lead(client, email="twice@example.org")
    body = assert_problem(move(client, old, "working"), 409)
    assert current["id"] in body["detail"]


# --- lists and search ------------------------------------------------------------------------


def test_lists_filter_by_status_owner_source_and_email(client, app):
    a = new_lead(client, email="Alpha@Example.org", source="referral", owner_id=SALES_ID)
    b = new_lead(client, last_name="Bravo")
    move(client, b, "working")

    def ids(query: str) -> set[str]:
        response = client.get(f"/api/v1/leads?{query}")
        assert response.status_code == 200, response.get_json()
        return {item["id"] for item in response.get_json()["items"]}

    assert ids("status=working") == {b["id"]}
    assert ids("status=new,working") == {a["id"], b["id"]}
    assert ids(f"owner_id={SALES_ID}") == {a["id"]}
    assert ids("source=referral") == {a["id"]}
    assert ids("email=alpha@EXAMPLE.org") == {a["id"]}
    assert ids("q=bravo") == {b["id"]}
    assert ids("q=alpha example") == {a["id"]}


def test_lists_sort_and_page_with_a_cursor(client):
    made = [new_lead(client, last_name=f"Name{n}") for n in range(5)]
    seen, cursor = [], None
    while True:
        query = "sort=last_name&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/api/v1/leads?{query}").get_json()
        seen += [item["last_name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(lead["last_name"] for lead in made)
    newest = client.get("/api/v1/leads?sort=-created_at&limit=1").get_json()["items"][0]
    assert newest["id"] == made[-1]["id"]
    assert client.get("/api/v1/leads?sort=-score").status_code == 200


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=hot", "status"),
        ("owner_id=bob", "owner_id"),
        ("sort=shoe_size", "sort"),
        ("limit=0", "limit"),
        ("cursor=garbage", "cursor"),
        ("colour=red", "colour"),
    ],
)
def test_bad_list_parameters_are_422(client, query, field):
    new_lead(client)
    assert field in assert_problem(client.get(f"/api/v1/leads?{query}"), 422)["errors"]


def test_search_ors_filter_groups_and_ands_filters(client):
    a = new_lead(client, company_name="Acme", title="VP Sales", email="x@acme.io")
    b = new_lead(client, company_name="Globex", custom_fields={"region": "emea"})
    new_lead(client, company_name="Initech")
    spec = {
        "filter_groups": [
            {
                "filters": [
                    {"field": "company_name", "operator": "eq", "value": "Acme"},
                    {"field": "title", "operator": "contains", "value": "vp"},
                ]
            },
            {"filters": [{"field": "custom_fields.region", "operator": "eq", "value": "emea"}]},
        ],
        "sort": "company_name",
    }
    response = client.post("/api/v1/leads/search", json=spec)
    assert response.status_code == 200
    assert [item["id"] for item in response.get_json()["items"]] == [a["id"], b["id"]]
    by_email = {"filters": [{"field": "email", "operator": "eq", "value": "X@ACME.IO"}]}
    found = client.post("/api/v1/leads/search", json={"filter_groups": [by_email]}).get_json()
    assert [item["id"] for item in found["items"]] == [a["id"]]
    scored = {"filters": [{"field": "score", "operator": "gte", "value": 0}]}
    everyone = client.post("/api/v1/leads/search", json={"filter_groups": [scored]}).get_json()
    assert len(everyone["items"]) == 3


@pytest.mark.parametrize(
    "spec",
    [
        {"filter_groups": [{"filters": [{"field": "shoe", "operator": "eq", "value": 1}]}]},
        {"filter_groups": [{"filters": [{"field": "score", "operator": "gt", "value": "x"}]}]},
        {"filter_groups": [{"filters": [{"field": "status", "operator": "near", "value": 1}]}]},
        {"sort": "shoe_size"},
        {"limit": 500},
        {"colour": "red"},
    ],
)
def test_bad_searches_are_422(client, spec):
    assert_problem(client.post("/api/v1/leads/search", json=spec), 422)


# --- roles -----------------------------------------------------------------------------------


def test_writes_need_the_sales_or_admin_role_and_reads_any_role(app, anonymous, client, db):
    lead = new_lead(client)
    path = f"/api/v1/leads/{lead['id']}"
    assert_problem(anonymous.get("/api/v1/leads"), 401)
    support = {"Authorization": f"Bearer {token_for(app, 'support', str(uuid.uuid4()))}"}
    viewer = {"Authorization": f"Bearer {token_for(app, 'viewer', str(uuid.uuid4()))}"}
    sales = {"Authorization": f"Bearer {token_for(app, 'sales', SALES_ID)}"}
    before = row_counts(db, *TABLES)
    assert_problem(anonymous.post("/api/v1/leads", json={"first_name": "S"}, headers=support), 403)
    assert_problem(anonymous.patch(path, json={"title": "S"}, headers=support), 403)
    assert_problem(anonymous.delete(path, headers=support), 403)
    assert_problem(anonymous.post(f"{path}/convert", json={}, headers=support), 403)
    assert_problem(anonymous.patch(path, json={"title": "V"}, headers=viewer), 403)
    assert row_counts(db, *TABLES) == before
    assert anonymous.get(path, headers=support).status_code == 200
    assert anonymous.get("/api/v1/leads", headers=viewer).status_code == 200
    made = anonymous.post("/api/v1/leads", json={"first_name": "S"}, headers=sales)
    assert made.status_code == 201 and made.get_json()["owner_id"] == SALES_ID


def test_find_open_lead_by_email_ignores_case_and_closed_leads(client, db):
    lead = new_lead(client, email="Find@Me.org")
    with db.session() as session:
        assert leads.find_open_lead_by_email(session, "find@ME.org").id == lead["id"]
        assert leads.find_open_lead_by_email(session, None) is None
    move(client, lead, "unqualified")
    with db.session() as session:
        assert leads.find_open_lead_by_email(session, "find@me.org") is None
