"""The contacts HTTP API: success paths and bad input, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from services.contacts.tests.conftest import ADMIN_ID, row_counts, token_for

TABLES = ("contacts", "outbox", "tags", "contact_tags")


def outbox_events(db, event_type=None):
    table = db.outbox
    statement = sa.select(table.c.event_type, table.c.payload).order_by(table.c.position)
    with db.engine.connect() as connection:
        rows = connection.execute(statement).all()
    return [json.loads(p) for t, p in rows if event_type is None or t == event_type]


def assert_problem(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["title"]
    return body


def test_creating_a_contact_answers_201_with_location_and_records_an_event(client, db):
    response = client.post(
        "/api/v1/contacts",
        json={
            "first_name": "Grace",
            "last_name": "Hopper",
            "email": "Grace@Navy.mil",
            "tags": ["VIP"],
        },
        headers={"X-Request-ID": "req-create-1"},
    )
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"/api/v1/contacts/{body['id']}"
    assert response.headers["X-Request-ID"] == "req-create-1"
    assert body["email"] == "Grace@Navy.mil"
    assert body["tags"] == ["VIP"]
    assert body["lifetime_value"] == {"amount": "0.00", "currency": "EUR"}
    assert body["created_at"].endswith("Z")
    [event] = outbox_events(db, "contact.created")
    assert event["aggregate_id"] == body["id"]
    assert event["correlation_id"] == "req-create-1"
    assert event["data"]["email"] == "Grace@Navy.mil"


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ("{not json", 400, None),
        ("[1, 2]", 400, None),
        ('{"first_name": "A", "favourite_colour": "blue"}', 422, "favourite_colour"),
        ('{"first_name": 12}', 422, "first_name"),
        ('{"first_name": "A", "email": "not-an-email"}', 422, "email"),
        ('{"first_name": "A", "lifecycle_stage": "king"}', 422, "lifecycle_stage"),
        ('{"first_name": "A", "lifetime_value": "1000000.00"}', 422, "lifetime_value"),
        ('{"first_name": "A", "company_id": "nope"}', 422, "company_id"),
        ('{"first_name": "A", "tags": "vip"}', 422, "tags"),
        ('{"phone": "12"}', 422, None),
        ("{}", 422, None),
    ],
)
def test_bad_contact_input_is_refused_and_changes_nothing(client, db, payload, status, field):
    before = row_counts(db, *TABLES)
    response = client.post("/api/v1/contacts", data=payload, content_type="application/json")
    body = assert_problem(response, status)
    if field:
        assert field in body["errors"]
    assert row_counts(db, *TABLES) == before


def test_an_oversize_body_is_refused_with_413(client, db):
    before = row_counts(db, *TABLES)
    huge = json.dumps({"first_name": "A", "title": "x" * (3 * 1024 * 1024)})
    response = client.post("/api/v1/contacts", data=huge, content_type="application/json")
    assert_problem(response, 413)
    assert row_counts(db, *TABLES) == before


def test_an_unknown_company_is_refused(client, db):
    before = row_counts(db, *TABLES)
    response = client.post(
        "/api/v1/contacts",
        json={"first_name": "A", "company_id": "5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11"},
    )
    assert "company_id" in assert_problem(response, 422)["errors"]
    assert row_counts(db, *TABLES) == before


def test_email_is_unique_case_insensitively(client, db, make_contact):
    make_contact(email="ada@example.org")
    before = row_counts(db, *TABLES)
    response = client.post("/api/v1/contacts", json={"first_name": "B", "email": "ADA@example.org"})
    assert "email" in assert_problem(response, 409)["errors"]
    assert row_counts(db, *TABLES) == before


def test_reading_an_unknown_or_malformed_id_is_404(client):
    assert_problem(client.get("/api/v1/contacts/5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11"), 404)
    assert_problem(client.get("/api/v1/contacts/not-a-uuid"), 404)
    assert_problem(
        client.patch("/api/v1/contacts/5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11", json={}), 404
    )
    assert_problem(client.delete("/api/v1/contacts/5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11"), 404)


def test_reading_a_contact_answers_what_its_last_write_answered(client, make_contact):
    made = make_contact(tags=["zeta", "Alpha", "beta"], custom_fields={}, phone="+1 555")
    updated = client.patch(
        f"/api/v1/contacts/{made['id']}",
        json={"title": "CTO", "lifecycle_stage": "customer"},
        headers={"If-Match": '"1"'},
    )
    assert updated.status_code == 200
    read = client.get(f"/api/v1/contacts/{made['id']}")
    assert read.status_code == 200
    assert read.get_json() == updated.get_json()
    assert read.get_json()["tags"] == ["Alpha", "beta", "zeta"]
    assert read.headers["ETag"] == '"2"'


def test_an_unsupported_method_is_405_problem(client):
    response = client.put("/api/v1/contacts")
    assert_problem(response, 405)
    assert "GET" in response.headers["Allow"]


def test_patch_changes_only_given_fields_and_records_what_changed(client, db, make_contact):
    contact = make_contact(title="Engineer")
    response = client.patch(
        f"/api/v1/contacts/{contact['id']}",
        json={"title": "CTO", "tags": ["b", "a"]},
        headers={"If-Match": '"1"'},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["title"] == "CTO" and body["first_name"] == contact["first_name"]
    assert body["tags"] == ["a", "b"] and body["version"] == 2
    assert response.headers["ETag"] == '"2"'
    [event] = outbox_events(db, "contact.updated")
    assert sorted(event["data"]["changed"]) == ["tags", "title"]
    assert event["aggregate_version"] == 2


def test_a_stale_if_match_is_a_conflict_and_changes_nothing(client, db, make_contact):
    contact = make_contact()
    client.patch(f"/api/v1/contacts/{contact['id']}", json={"title": "One"})
    response = client.patch(
        f"/api/v1/contacts/{contact['id']}", json={"title": "Two"}, headers={"If-Match": '"1"'}
    )
    assert_problem(response, 409)
    assert client.get(f"/api/v1/contacts/{contact['id']}").get_json()["title"] == "One"


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "nope"},
        {"id": "5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11"},
        {"version": 7},
        {"owner_id": 5},
    ],
)
def test_bad_patches_are_refused_and_change_nothing(client, db, make_contact, payload):
    contact = make_contact()
    before = row_counts(db, *TABLES)
    assert_problem(client.patch(f"/api/v1/contacts/{contact['id']}", json=payload), 422)
    assert row_counts(db, *TABLES) == before
    assert client.get(f"/api/v1/contacts/{contact['id']}").get_json() == contact


def test_deleting_a_contact_answers_204_and_records_an_event(client, db, make_contact):
    contact = make_contact()
    assert client.delete(f"/api/v1/contacts/{contact['id']}").status_code == 204
    assert_problem(client.get(f"/api/v1/contacts/{contact['id']}"), 404)
    assert len(outbox_events(db, "contact.deleted")) == 1


def test_listing_pages_through_every_contact_once_with_cursors(client, make_contact):
    created = {make_contact()["id"] for _ in range(7)}
    seen, cursor = [], None
    while True:
        url = "/api/v1/contacts?limit=3&sort=last_name" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url).get_json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and set(seen) == created


def test_listing_filters_by_fields_tag_and_free_text(client, make_contact):
    make_contact(first_name="Alan", last_name="Turing", lifecycle_stage="customer", tags=["vip"])
    make_contact(first_name="Ada", last_name="Byron", lifecycle_stage="lead")
    names = lambda url: [c["last_name"] for c in client.get(url).get_json()["items"]]  # noqa: E731
    assert names("/api/v1/contacts?lifecycle_stage=customer") == ["Turing"]
    assert names("/api/v1/contacts?tag=VIP") == ["Turing"]
    assert names("/api/v1/contacts?q=alan%20tur") == ["Turing"]
    assert names("/api/v1/contacts?sort=last_name") == ["Byron", "Turing"]
    assert names("/api/v1/contacts?sort=-last_name") == ["Turing", "Byron"]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "limit=abc", "sort=password", "cursor=garbage", "colour=red"]
)
def test_bad_list_parameters_are_422(client, query):
    assert_problem(client.get(f"/api/v1/contacts?{query}"), 422)


def test_search_ors_groups_and_ands_filters(client, make_contact):
    make_contact(first_name="Alan", lifecycle_stage="customer", tags=["vip"])
    make_contact(first_name="Ada", lifecycle_stage="customer")
    make_contact(first_name="Bob", lifecycle_stage="lead", title="VP Sales")
    body = {
        "filter_groups": [
            {
                "filters": [
                    {"field": "lifecycle_stage", "operator": "eq", "value": "customer"},
                    {"field": "tags", "operator": "eq", "value": "VIP"},
                ]
            },
            {"filters": [{"field": "title", "operator": "contains", "value": "vp"}]},
        ],
        "sort": "first_name",
    }
    response = client.post("/api/v1/contacts/search", json=body)
    assert response.status_code == 200
    assert [c["first_name"] for c in response.get_json()["items"]] == ["Alan", "Bob"]


@pytest.mark.parametrize(
    "filters",
    [
        [{"field": "password", "operator": "eq", "value": "x"}],
        [{"field": "first_name", "operator": "like", "value": "x"}],
        [{"field": "created_at", "operator": "gt", "value": "yesterday"}],
        [{"field": "lifetime_value", "operator": "gt", "value": "lots"}],
        [{"field": "first_name", "operator": "in", "value": "x"}],
    ],
)
def test_search_refuses_bad_filters_with_422(client, filters):
    response = client.post(
        "/api/v1/contacts/search", json={"filter_groups": [{"filters": filters}]}
    )
    assert_problem(response, 422)


def test_search_by_custom_field_and_dates(client, make_contact):
    client.post(
        "/api/v1/custom-fields", json={"name": "plan", "type": "select", "options": ["free", "pro"]}
    )
    make_contact(first_name="Pro", custom_fields={"plan": "pro"})
    make_contact(first_name="Free", custom_fields={"plan": "free"})
    body = {
        "filter_groups": [
            {
                "filters": [
                    {"field": "custom_fields.plan", "operator": "eq", "value": "pro"},
                    {"field": "created_at", "operator": "gt", "value": "2000-01-01T00:00:00Z"},
                ]
            }
        ]
    }
    items = client.post("/api/v1/contacts/search", json=body).get_json()["items"]
    assert [c["first_name"] for c in items] == ["Pro"]


def test_batch_create_answers_207_with_a_result_per_input(client, db, make_contact):
    make_contact(email="taken@example.com")
    inputs = [
        {"first_name": "Ok", "email": "ok@example.com"},
        {"first_name": "Dup", "email": "TAKEN@example.com"},
        {"first_name": "Bad", "email": "nope"},
    ]
    response = client.post("/api/v1/contacts/batch/create", json={"inputs": inputs})
    assert response.status_code == 207
    statuses = [r["status"] for r in response.get_json()["results"]]
    assert statuses == [201, 409, 422]
    assert len(outbox_events(db, "contact.created")) == 2  # the fixture's and "Ok"


def test_batch_create_all_good_is_201_and_over_100_is_422(client):
    inputs = [{"first_name": f"P{i}"} for i in range(3)]
    assert client.post("/api/v1/contacts/batch/create", json={"inputs": inputs}).status_code == 201
    too_many = [{"first_name": f"P{i}"} for i in range(101)]
    assert_problem(client.post("/api/v1/contacts/batch/create", json={"inputs": too_many}), 422)


def test_batch_update_and_read(client, make_contact):
    first, second = make_contact(), make_contact()
    inputs = [
        {"id": first["id"], "title": "Boss"},
        {"id": "5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11", "title": "X"},
    ]
    response = client.post("/api/v1/contacts/batch/update", json={"inputs": inputs})
    assert response.status_code == 207
    assert [r["status"] for r in response.get_json()["results"]] == [200, 404]
    read = client.post("/api/v1/contacts/batch/read", json={"ids": [first["id"], second["id"]]})
    assert read.status_code == 200
    assert read.get_json()["results"][0]["item"]["title"] == "Boss"


def test_idempotency_key_returns_the_first_answer_not_a_second_contact(client, db):
    headers = {"Idempotency-Key": "abc-123"}
    first = client.post("/api/v1/contacts", json={"first_name": "Once"}, headers=headers)
    again = client.post("/api/v1/contacts", json={"first_name": "Once"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.get_json() == again.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert row_counts(db, "contacts")["contacts"] == 1
    other = client.post("/api/v1/contacts", json={"first_name": "Other"}, headers=headers)
    assert_problem(other, 422)


def test_calls_without_a_valid_token_are_401_and_viewers_only_read(app, anonymous, make_contact):
    assert_problem(anonymous.get("/api/v1/contacts"), 401)
    bad = {"Authorization": "Bearer not.a.token"}
    assert_problem(anonymous.get("/api/v1/contacts", headers=bad), 401)
    viewer = {"Authorization": f"Bearer {token_for(app, 'viewer')}"}
    assert anonymous.get("/api/v1/contacts", headers=viewer).status_code == 200
    assert_problem(
        anonymous.post("/api/v1/contacts", json={"first_name": "V"}, headers=viewer), 403
    )


def test_notes_can_be_added_listed_changed_and_deleted(client, make_contact):
    contact = make_contact()
    base = f"/api/v1/contacts/{contact['id']}/notes"
    note = client.post(base, json={"body": "Met at the fair"}).get_json()
    assert client.get(base).get_json()["items"][0]["body"] == "Met at the fair"
    assert (
        client.patch(f"{base}/{note['id']}", json={"body": "Changed"}).get_json()["body"]
        == "Changed"
    )
    assert_problem(client.post(base, json={"body": ""}), 422)
    assert_problem(client.post(base, json={"text": "x"}), 422)
    assert client.delete(f"{base}/{note['id']}").status_code == 204
    assert_problem(client.get(f"{base}/{note['id']}"), 404)


def test_logging_a_call_puts_it_on_the_timeline_and_marks_activity(client, make_contact):
    contact = make_contact()
    base = f"/api/v1/contacts/{contact['id']}/interactions"
    response = client.post(
        base,
        json={
            "kind": "call",
            "direction": "outbound",
            "subject": "Intro",
            "occurred_at": "2026-11-20T10:00:00Z",
        },
    )
    assert response.status_code == 201
    assert client.get(base).get_json()["items"][0]["subject"] == "Intro"
    updated = client.get(f"/api/v1/contacts/{contact['id']}").get_json()
    assert updated["last_activity_at"] == "2026-11-20T10:00:00Z"
    assert_problem(client.post(base, json={"kind": "telepathy"}), 422)
    assert_problem(client.post(base, json={"kind": "call", "occurred_at": "2026-11-20"}), 422)


def test_custom_fields_are_typed(client, make_contact):
    assert (
        client.post("/api/v1/custom-fields", json={"name": "seats", "type": "integer"}).status_code
        == 201
    )
    assert_problem(
        client.post("/api/v1/custom-fields", json={"name": "seats", "type": "text"}), 409
    )
    assert_problem(
        client.post("/api/v1/custom-fields", json={"name": "Bad Name", "type": "text"}), 422
    )
    assert_problem(
        client.post("/api/v1/custom-fields", json={"name": "tier", "type": "select"}), 422
    )
    contact = make_contact(custom_fields={"seats": 12})
    assert contact["custom_fields"] == {"seats": 12}
    response = client.post(
        "/api/v1/contacts", json={"first_name": "X", "custom_fields": {"seats": "many"}}
    )
    assert "custom_fields" in assert_problem(response, 422)["errors"]
    response = client.post(
        "/api/v1/contacts", json={"first_name": "X", "custom_fields": {"nope": 1}}
    )
    assert_problem(response, 422)


def test_companies_can_be_created_listed_updated_and_deleted(client, make_contact):
    response = client.post(
        "/api/v1/companies", json={"name": "Acme", "domain": "Acme.com", "industry": "Tools"}
    )
    assert response.status_code == 201
    company = response.get_json()
    assert company["domain"] == "acme.com"
    contact = make_contact(company_id=company["id"])
    members = client.get(f"/api/v1/companies/{company['id']}/contacts").get_json()["items"]
    assert [m["id"] for m in members] == [contact["id"]]
    assert client.get("/api/v1/companies?q=acm").get_json()["items"][0]["name"] == "Acme"
    patched = client.patch(f"/api/v1/companies/{company['id']}", json={"size": "11-50"}).get_json()
    assert patched["size"] == "11-50" and patched["version"] == 2
    assert_problem(
        client.post("/api/v1/companies", json={"name": "X", "domain": "not a domain"}), 422
    )
    assert_problem(client.post("/api/v1/companies", json={"domain": "x.com"}), 422)
    assert client.delete(f"/api/v1/companies/{company['id']}").status_code == 204
    assert client.get(f"/api/v1/contacts/{contact['id']}").get_json()["company_id"] is None


def test_merging_moves_notes_timeline_and_tags_and_removes_the_duplicate(client, db, make_contact):
    keep = make_contact(tags=["a"], phone=None)
    duplicate = make_contact(tags=["b"], phone="+44 20 1234")
    client.post(f"/api/v1/contacts/{duplicate['id']}/notes", json={"body": "from the duplicate"})
    client.post(f"/api/v1/contacts/{duplicate['id']}/interactions", json={"kind": "meeting"})
    response = client.post(
        f"/api/v1/contacts/{keep['id']}/merge", json={"duplicate_id": duplicate["id"]}
    )
    assert response.status_code == 200
    merged = response.get_json()
    assert merged["tags"] == ["a", "b"] and merged["phone"] == "+44 20 1234"
    assert_problem(client.get(f"/api/v1/contacts/{duplicate['id']}"), 404)
    notes = client.get(f"/api/v1/contacts/{keep['id']}/notes").get_json()["items"]
    assert [n["body"] for n in notes] == ["from the duplicate"]
    assert len(client.get(f"/api/v1/contacts/{keep['id']}/interactions").get_json()["items"]) == 1
    [event] = outbox_events(db, "contact.merged")
    assert event["data"]["duplicate_id"] == duplicate["id"] and event["aggregate_id"] == keep["id"]


def test_merging_into_itself_or_an_unknown_duplicate_is_refused(client, make_contact):
    contact = make_contact()
    url = f"/api/v1/contacts/{contact['id']}/merge"
    assert_problem(client.post(url, json={"duplicate_id": contact["id"]}), 422)
    assert_problem(
        client.post(url, json={"duplicate_id": "5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11"}), 404
    )
    assert_problem(client.post(url, json={"duplicate": contact["id"]}), 422)


def test_the_subject_export_holds_everything_about_the_person(client, make_contact):
    contact = make_contact()
    client.post(f"/api/v1/contacts/{contact['id']}/notes", json={"body": "likes tea"})
    export = client.get(f"/api/v1/contacts/{contact['id']}/export").get_json()
    assert export["contact"]["email"] == contact["email"]
    assert [n["body"] for n in export["notes"]] == ["likes tea"]


def test_erasure_leaves_no_personal_data_outbox_included(app, client, db, make_contact):
    email = "erase.me.please@example.com"
    contact = make_contact(email=email, first_name="Zebediah")
    client.post(
        f"/api/v1/contacts/{contact['id']}/notes",
        json={"body": "Zebediah's secret"},
        headers={"Idempotency-Key": "note-1"},
    )
    response = client.delete(f"/api/v1/contacts/{contact['id']}?erase=true")
    assert response.status_code == 204
    assert_problem(client.get(f"/api/v1/contacts/{contact['id']}"), 404)
    [erased] = outbox_events(db, "contact.erased")
    assert erased["data"]["id"] == contact["id"]
    with db.engine.connect() as connection:
        for table in db.metadata.sorted_tables:
            for row in connection.execute(sa.select(table)):
                text = " ".join(str(value) for value in row)
                assert email not in text and "Zebediah" not in text, table.name
    if db.engine.dialect.name == "sqlite":
        path = db.engine.url.database
        raw = b"".join(
            open(p, "rb").read() for p in (path, path + "-wal") if __import__("os").path.exists(p)
        )
        assert email.encode() not in raw


def test_erase_must_be_true_or_false(client, make_contact):
    contact = make_contact()
    assert_problem(client.delete(f"/api/v1/contacts/{contact['id']}?erase=maybe"), 422)
    twice = client.delete(f"/api/v1/contacts/{contact['id']}?erase=false&erase=true")
    assert_problem(twice, 422)
    assert client.get(f"/api/v1/contacts/{contact['id']}").status_code == 200


@pytest.mark.parametrize("role", ["sales", "support", "marketing", "viewer"])
def test_only_an_admin_may_erase_or_merge_people(app, client, db, make_contact, role):
    keep, duplicate = make_contact(), make_contact()
    before = row_counts(db, *TABLES)
    other = {"Authorization": f"Bearer {token_for(app, role, ADMIN_ID)}"}
    url = f"/api/v1/contacts/{keep['id']}"

    erase = client.delete(f"{url}?erase=true", headers=other)
    merge = client.post(f"{url}/merge", json={"duplicate_id": duplicate["id"]}, headers=other)

    assert_problem(erase, 403)
    assert_problem(merge, 403)
    assert row_counts(db, *TABLES) == before
    assert client.get(url).status_code == 200
    assert client.get(f"/api/v1/contacts/{duplicate['id']}").status_code == 200


def test_health_ready_and_metrics_answer(app):
    client = app.test_client()
    assert client.get("/health").get_json()["status"] == "ok"
    ready = client.get("/ready")  # its database answers: ready, whatever the broker does
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"
    assert ready.get_json()["checks"]["database"] == "ok"
    assert b"crm_http_requests_total" in client.get("/metrics").data


def test_an_unexpected_error_is_a_500_that_leaks_nothing(app, client):
    @app.get("/api/v1/boom")
    def boom():
        raise RuntimeError("secret internals /etc/passwd")

    response = client.get("/api/v1/boom")
    body = assert_problem(response, 500)
    assert (
        "secret" not in response.get_data(as_text=True) and body["title"] == "Internal Server Error"
    )


def test_a_refused_request_frees_its_idempotency_key(client, db):
    headers = {"Idempotency-Key": "retry-me"}
    assert_problem(client.post("/api/v1/contacts", json={"first_name": 1}, headers=headers), 422)
    fixed = client.post("/api/v1/contacts", json={"first_name": "Fixed"}, headers=headers)
    assert fixed.status_code == 201


def test_readiness_needs_the_database_not_the_broker(database_url):
    from services.contacts.app import create_app

    app = create_app(
        {
            "database_url": database_url,
            "create_tables": True,
            "amqp_url": "amqp://guest:guest@127.0.0.1:1/%2F",
        }
    )
    answer = app.test_client().get("/ready")
    assert answer.status_code == 200
    assert answer.get_json()["checks"] == {"broker": "unavailable", "database": "ok"}
    app.extensions["crm.db"].dispose()


def test_readiness_fails_when_the_database_is_unreachable():
    from services.contacts.app import create_app

    app = create_app({"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/none"})
    answer = app.test_client().get("/ready")
    assert answer.status_code == 503 and answer.mimetype == "application/problem+json"
    assert answer.get_json()["checks"]["database"] == "unavailable"
    assert answer.get_json()["detail"] == "Unavailable: database"


def test_readiness_can_require_the_broker_too(database_url, monkeypatch):
    from services.contacts.app import create_app

    monkeypatch.setenv("CRM_READY_REQUIRES_BROKER", "on")
    app = create_app(
        {
            "database_url": database_url,
            "create_tables": True,
            "amqp_url": "amqp://guest:guest@127.0.0.1:1/%2F",
        }
    )
    answer = app.test_client().get("/ready")
    app.extensions["crm.db"].dispose()
    assert answer.status_code == 503 and answer.mimetype == "application/problem+json"
    assert answer.get_json()["detail"] == "Unavailable: broker"
    assert answer.get_json()["checks"] == {"broker": "unavailable", "database": "ok"}


@pytest.mark.parametrize("query", ["limit=&limit=500", "limit=5&limit=6", "cursor=a&cursor=b"])
def test_a_repeated_paging_parameter_is_422_on_every_list(client, make_contact, query):
    contact = make_contact()
    for path in ("/api/v1/contacts", f"/api/v1/contacts/{contact['id']}/interactions"):
        assert_problem(client.get(f"{path}?{query}"), 422)
    for path in (f"/api/v1/contacts/{contact['id']}/notes", "/api/v1/companies"):
        assert_problem(client.get(f"{path}?{query}"), 422)
