"""The deals HTTP API: success paths, stage moves, win/lose/reopen, bad input, both databases."""

from __future__ import annotations

import json

import pytest

from services.sales.tests.api_helpers import (
    DEFAULT_PIPELINE,
    DEFAULT_STAGE_IDS,
    UNKNOWN,
    api_routes,
    assert_problem,
    bearer,
    new_deal,
    new_pipeline,
    outbox_events,
    path_for,
    snapshot,
    unknown_ids,
)
from services.sales.tests.conftest import ADMIN_ID, SALES_ID, row_counts

TABLES = ("deals", "deal_totals", "outbox", "tasks")
BASE = "/api/v1/deals"
CONTACT = "7d0c1b52-3f0e-4a39-9a53-1c2e3f4a5b6c"
COMPANY = "8e1d2c63-4f1f-4b4a-8b64-2d3f4a5b6c7d"


def test_creating_a_deal_fills_defaults_answers_201_and_records_an_event(client, db):
    response = client.post(
        BASE,
        json={"name": "Big one", "amount": "1250.00", "currency": "USD", "contact_id": CONTACT},
        headers={"X-Request-ID": "req-deal-1"},
    )
    assert response.status_code == 201
    deal = response.get_json()
    assert response.headers["Location"] == f"{BASE}/{deal['id']}"
    assert response.headers["ETag"] == '"1"'
    assert deal["pipeline_id"] == DEFAULT_PIPELINE and deal["stage_id"] == DEFAULT_STAGE_IDS[0]
    assert deal["owner_id"] == ADMIN_ID and deal["status"] == "open"
    assert deal["amount"] == "1250.00" and deal["value"] == {"amount": "1250.00", "currency": "USD"}
    assert deal["created_at"].endswith("Z") and deal["closed_at"] is None
    [event] = outbox_events(db, "deal.created")
    assert event["aggregate_id"] == deal["id"] and event["aggregate_version"] == 1
    assert event["correlation_id"] == "req-deal-1"
    assert event["data"]["deal_id"] == deal["id"] and event["data"]["amount"] == "1250.00"
    assert client.get(f"{BASE}/{deal['id']}").get_json() == deal


def test_money_may_be_a_number_or_a_value_object(client):
    assert new_deal(client, amount=1250)["amount"] == "1250.00"
    assert new_deal(client, amount="99.5")["amount"] == "99.50"
    assert new_deal(client, amount=0.1)["amount"] == "0.10"
    deal = new_deal(client, value={"amount": "10.00", "currency": "GBP"})
    assert deal["amount"] == "10.00" and deal["currency"] == "GBP"


def test_a_stage_alone_places_the_deal_in_its_pipeline(client):
    pipeline = new_pipeline(client)
    deal = new_deal(client, stage_id=pipeline["stages"][2]["id"])
    assert deal["pipeline_id"] == pipeline["id"]


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ("{nope", 400, None),
        ('"deal"', 400, None),
        ("{}", 422, "name"),
        ('{"name": ""}', 422, "name"),
        ('{"name": "D", "amount": 1e400}', 422, "amount"),
        ('{"name": "D", "amount": NaN}', 422, "amount"),
        ('{"name": "D", "amount": "Infinity"}', 422, "amount"),
        ('{"name": "D", "amount": "-1.00"}', 422, "amount"),
        ('{"name": "D", "amount": "1.005"}', 422, "amount"),
        ('{"name": "D", "amount": "12,50"}', 422, "amount"),
        ('{"name": "D", "amount": true}', 422, "amount"),
        ('{"name": "D", "amount": "1000000000000.00"}', 422, "amount"),
        ('{"name": "D", "currency": "eur"}', 422, "currency"),
        ('{"name": "D", "currency": "EURO"}', 422, "currency"),
        ('{"name": "D", "value": {"amount": "1.00"}}', 422, "value"),
        ('{"name": "D", "value": {"amount": "1", "currency": "EUR"}, "amount": "2"}', 422, "value"),
        ('{"name": "D", "status": "won"}', 422, "status"),
        ('{"name": "D", "lost_reason": "x"}', 422, "lost_reason"),
        ('{"name": "D", "closed_at": "2026-01-01T00:00:00Z"}', 422, "closed_at"),
        ('{"name": "D", "version": 4}', 422, "version"),
        ('{"name": "D", "colour": "red"}', 422, "colour"),
        ('{"name": "D\\u0000"}', 422, "name"),
        ('{"name": "D", "expected_close_date": "next week"}', 422, "expected_close_date"),
        ('{"name": "D", "contact_id": "nope"}', 422, "contact_id"),
        ('{"name": "D", "pipeline_id": "' + UNKNOWN + '"}', 422, "pipeline_id"),
        ('{"name": "D", "stage_id": "' + UNKNOWN + '"}', 422, "stage_id"),
    ],
)
def test_bad_deal_input_is_refused_and_changes_nothing(client, db, payload, status, field):
    before = row_counts(db, *TABLES)
    response = client.post(BASE, data=payload, content_type="application/json")
    body = assert_problem(response, status)
    if field:
        assert field in body["errors"]
    assert row_counts(db, *TABLES) == before


def test_a_stage_of_another_pipeline_is_refused(client, db):
    pipeline = new_pipeline(client)
    before = row_counts(db, *TABLES)
    response = client.post(
        BASE, json={"name": "D", "pipeline_id": pipeline["id"], "stage_id": DEFAULT_STAGE_IDS[1]}
    )
    assert "stage_id" in assert_problem(response, 422)["errors"]
    assert row_counts(db, *TABLES) == before


def test_patch_changes_only_given_fields_and_records_what_changed(client, db):
    deal = new_deal(client, amount="10.00", description="First")
    url = f"{BASE}/{deal['id']}"
    response = client.patch(
        url,
        json={"amount": "20.00", "expected_close_date": "2026-12-31"},
        headers={"If-Match": '"1"'},
    )
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    body = response.get_json()
    assert body["amount"] == "20.00" and body["expected_close_date"] == "2026-12-31"
    assert body["description"] == "First" and body["version"] == 2
    [event] = outbox_events(db, "deal.updated")
    assert sorted(event["data"]["changed"]) == ["amount", "expected_close_date"]
    assert event["aggregate_version"] == 2
    value = client.patch(url, json={"value": {"currency": "USD"}}).get_json()
    assert value["value"] == {"amount": "20.00", "currency": "USD"} and value["version"] == 3
    same = client.patch(url, json={"amount": "20"})
    assert same.get_json()["version"] == 3 and len(outbox_events(db, "deal.updated")) == 2


def test_a_stale_if_match_is_409_and_changes_nothing(client, db):
    deal = new_deal(client)
    url = f"{BASE}/{deal['id']}"
    client.patch(url, json={"name": "Renamed"})
    before = snapshot(db)
    for response in (
        client.patch(url, json={"name": "Late"}, headers={"If-Match": '"1"'}),
        client.post(f"{url}/win", headers={"If-Match": '"1"'}),
        client.delete(url, headers={"If-Match": '"1"'}),
    ):
        assert_problem(response, 409)
    assert_problem(client.patch(url, json={"name": "X"}, headers={"If-Match": "soon"}), 400)
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"status": "won"}, "status"),
        ({"id": UNKNOWN}, "id"),
        ({"name": None}, "name"),
        ({"amount": None}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"stage_id": UNKNOWN}, "stage_id"),
        ({"stage_id": "__other__"}, "stage_id"),
        ({"pipeline_id": "__other_pipeline__"}, "stage_id"),
        ({"pipeline_id": UNKNOWN, "stage_id": DEFAULT_STAGE_IDS[1]}, "pipeline_id"),
        ({"pipeline_id": "__other_pipeline__", "stage_id": DEFAULT_STAGE_IDS[1]}, "stage_id"),
    ],
)
def test_bad_patches_are_422_and_change_nothing(client, db, payload, field):
    other = new_pipeline(client)
    deal = new_deal(client)
    replace = {"__other__": other["stages"][0]["id"], "__other_pipeline__": other["id"]}
    payload = {name: replace.get(value, value) for name, value in payload.items()}
    before = snapshot(db)
    body = assert_problem(client.patch(f"{BASE}/{deal['id']}", json=payload), 422)
    assert field in body["errors"]
    if field == "status":
        assert "/win" in body["errors"]["status"][0]
    assert snapshot(db) == before


def test_moving_a_deal_to_another_stage_records_stage_changed(client, db):
    deal = new_deal(client)
    response = client.patch(
        f"{BASE}/{deal['id']}", json={"stage_id": DEFAULT_STAGE_IDS[2], "amount": "5.00"}
    )
    body = response.get_json()
    assert response.status_code == 200 and body["stage_id"] == DEFAULT_STAGE_IDS[2]
    assert body["stage_changed_at"] > deal["stage_changed_at"]
    [event] = outbox_events(db, "deal.stage_changed")
    assert event["data"]["from_stage_id"] == DEFAULT_STAGE_IDS[0]
    assert event["data"]["to_stage_id"] == DEFAULT_STAGE_IDS[2]
    assert sorted(event["data"]["changed"]) == ["amount", "stage_id"]
    assert event["aggregate_version"] == 2 and outbox_events(db, "deal.updated") == []


def test_moving_a_deal_to_another_pipeline_needs_one_of_its_stages(client):
    other = new_pipeline(client)
    deal = new_deal(client)
    target = other["stages"][1]["id"]
    response = client.patch(
        f"{BASE}/{deal['id']}", json={"pipeline_id": other["id"], "stage_id": target}
    )
    assert response.status_code == 200
    assert response.get_json()["pipeline_id"] == other["id"]
    assert response.get_json()["stage_id"] == target


def test_a_closed_deal_cannot_change_stage_but_other_fields_change(client, db):
    deal = new_deal(client)
    url = f"{BASE}/{deal['id']}"
    client.post(f"{url}/win")
    before = snapshot(db)
    assert_problem(client.patch(url, json={"stage_id": DEFAULT_STAGE_IDS[3]}), 409)
    assert snapshot(db) == before
    assert client.patch(url, json={"description": "Signed"}).status_code == 200


def test_winning_a_deal_records_deal_won_with_what_contacts_needs(client, db):
    deal = new_deal(client, amount="1250.00", currency="EUR", contact_id=CONTACT)
    response = client.post(f"{BASE}/{deal['id']}/win")
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    won = response.get_json()
    assert won["status"] == "won" and won["closed_at"].endswith("Z")
    [event] = outbox_events(db, "deal.won")
    data = event["data"]
    assert data["deal_id"] == deal["id"] and data["contact_id"] == CONTACT
    assert data["amount"] == "1250.00" and data["currency"] == "EUR"
    assert data["owner_id"] == ADMIN_ID and event["aggregate_version"] == 2


def test_a_deal_may_be_won_at_a_given_time_but_not_in_the_future(client, db):
    deal = new_deal(client)
    url = f"{BASE}/{deal['id']}/win"
    before = snapshot(db)
    assert_problem(client.post(url, json={"closed_at": "2999-01-01T00:00:00Z"}), 422)
    assert_problem(client.post(url, json={"closed_at": "2026-01-01T10:00:00"}), 422)
    assert_problem(client.post(url, json={"amount": "5"}), 422)
    assert snapshot(db) == before
    won = client.post(url, json={"closed_at": "2026-01-01T12:00:00+02:00"}).get_json()
    assert won["closed_at"] == "2026-01-01T10:00:00Z"


def test_losing_a_deal_needs_a_reason_and_records_deal_lost(client, db):
    deal = new_deal(client)
    url = f"{BASE}/{deal['id']}/lose"
    before = snapshot(db)
    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 501}, {"why": "x"}):
        assert_problem(client.post(url, json=body), 422)
    assert_problem(client.post(url), 400)
    assert snapshot(db) == before
    lost = client.post(url, json={"reason": "Went with a competitor"}).get_json()
    assert lost["status"] == "lost" and lost["lost_reason"] == "Went with a competitor"
    [event] = outbox_events(db, "deal.lost")
    assert event["data"]["lost_reason"] == "Went with a competitor"


def test_closing_a_closed_deal_is_409(client, db):
    deal = new_deal(client)
    url = f"{BASE}/{deal['id']}"
    client.post(f"{url}/win")
    before = snapshot(db)
    assert_problem(client.post(f"{url}/win"), 409)
    assert_problem(client.post(f"{url}/lose", json={"reason": "x"}), 409)
    assert snapshot(db) == before


def test_reopening_puts_a_closed_deal_back_in_play(client, db):
    deal = new_deal(client)
    url = f"{BASE}/{deal['id']}"
    assert_problem(client.post(f"{url}/reopen"), 409)
    client.post(f"{url}/lose", json={"reason": "Timing"})
    assert_problem(client.post(f"{url}/reopen", json={"reason": "x"}), 422)
    response = client.post(f"{url}/reopen", json={})
    body = response.get_json()
    assert response.status_code == 200 and body["status"] == "open"
    assert body["lost_reason"] is None and body["closed_at"] is None and body["version"] == 3
    [event] = outbox_events(db, "deal.reopened")
    assert event["data"]["previous_status"] == "lost" and event["aggregate_version"] == 3


def test_deleting_a_deal_answers_204_and_leaves_its_tasks_without_a_deal(client, db):
    deal = new_deal(client)
    task = client.post("/api/v1/tasks", json={"title": "Call", "deal_id": deal["id"]}).get_json()
    assert client.delete(f"{BASE}/{deal['id']}").status_code == 204
    assert_problem(client.get(f"{BASE}/{deal['id']}"), 404)
    [event] = outbox_events(db, "deal.deleted")
    assert event["aggregate_id"] == deal["id"] and event["aggregate_version"] == 2
    assert client.get(f"/api/v1/tasks/{task['id']}").get_json()["deal_id"] is None
    assert row_counts(db, "deal_totals")["deal_totals"] == 0


def test_listing_filters_deals(client):
    other = new_pipeline(client)
    a = new_deal(client, name="Alpha deal", contact_id=CONTACT, expected_close_date="2026-03-01")
    b = new_deal(client, name="Beta deal", company_id=COMPANY, expected_close_date="2026-05-01")
    c = new_deal(client, name="Gamma", pipeline_id=other["id"], owner_id=SALES_ID)
    client.post(f"{BASE}/{b['id']}/win")

    def names(query: str) -> list[str]:
        response = client.get(f"{BASE}?{query}")
        assert response.status_code == 200, response.get_json()
        return sorted(d["name"] for d in response.get_json()["items"])

    assert names("status=won") == ["Beta deal"]
    assert names(f"pipeline_id={other['id']}") == ["Gamma"]
    assert names(f"stage_id={DEFAULT_STAGE_IDS[0]}") == ["Alpha deal", "Beta deal"]
    assert names(f"owner_id={SALES_ID}") == ["Gamma"]
    assert names(f"contact_id={CONTACT}") == ["Alpha deal"]
    assert names(f"company_id={COMPANY}") == ["Beta deal"]
    assert names("close_after=2026-03-01&close_before=2026-04-30") == ["Alpha deal"]
    assert names("close_after=2026-03-02") == ["Beta deal"]
    assert names("q=DEAL%20alp") == ["Alpha deal"]
    assert names("status=open&q=gam") == ["Gamma"]
    assert {a["id"], c["id"]} <= {
        d["id"] for d in client.get(f"{BASE}?status=open").get_json()["items"]
    }


def test_listing_sorts_and_pages_through_every_deal_once(client):
    amounts = ["30.00", "10.00", "20.00", "10.00", "5.00", "40.00", "25.00"]
    dates = ["2026-01-05", None, "2026-01-01", None, "2026-02-01", "2026-01-03", None]
    for index, (amount, day) in enumerate(zip(amounts, dates, strict=True)):
        new_deal(client, name=f"D{index}", amount=amount, expected_close_date=day)
    for sort in ("amount", "-amount", "expected_close_date", "-expected_close_date", "name"):
        seen, cursor = [], None
        while True:
            url = f"{BASE}?limit=3&sort={sort}" + (f"&cursor={cursor}" if cursor else "")
            page = client.get(url).get_json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len({d["id"] for d in seen}) == 7, sort
        field = sort.lstrip("-")
        keys = [d[field] or "9999" for d in seen]
        if field == "amount":
            keys = [float(k) for k in keys]
        assert keys == sorted(keys, reverse=sort.startswith("-")), sort


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=500",
        "status=maybe",
        "pipeline_id=nope",
        "close_after=yesterday",
        "colour=red",
        "sort=password",
        "cursor=garbage",
        "status=open&status=won",
        "currency=eur",
        "q=a%00b",
    ],
)
def test_bad_list_parameters_are_422(client, query):
    assert_problem(client.get(f"{BASE}?{query}"), 422)


def test_search_ors_groups_and_ands_filters(client):
    new_deal(client, name="Small", amount="10.00")
    new_deal(client, name="Large", amount="5000.00", currency="USD")
    new_deal(client, name="Dated", expected_close_date="2026-06-01")
    body = {
        "filter_groups": [
            {
                "filters": [
                    {"field": "amount", "operator": "gte", "value": "1000"},
                    {"field": "currency", "operator": "eq", "value": "USD"},
                ]
            },
            {
                "filters": [
                    {"field": "expected_close_date", "operator": "lt", "value": "2026-07-01"}
                ]
            },
        ],
        "sort": "name",
    }
    response = client.post(f"{BASE}/search", json=body)
    assert response.status_code == 200
    assert [d["name"] for d in response.get_json()["items"]] == ["Dated", "Large"]
    query = client.post(f"{BASE}/search", json={"query": "sma"}).get_json()
    assert [d["name"] for d in query["items"]] == ["Small"]


@pytest.mark.parametrize(
    "filters",
    [
        [{"field": "password", "operator": "eq", "value": "x"}],
        [{"field": "amount", "operator": "gt", "value": "lots"}],
        [{"field": "expected_close_date", "operator": "gt", "value": "soon"}],
        [{"field": "status", "operator": "like", "value": "open"}],
        [{"field": "amount", "operator": "contains", "value": "1"}],
        [{"field": "amount", "operator": "gt", "value": "1e999999"}],
        [{"field": "amount", "operator": "in", "value": ["1", "NaN"]}],
        [{"field": "name", "operator": "eq", "value": "a\u0000"}],
    ],
)
def test_search_refuses_bad_filters_with_422(client, filters):
    response = client.post(f"{BASE}/search", json={"filter_groups": [{"filters": filters}]})
    assert_problem(response, 422)


def test_batch_create_answers_207_with_a_result_per_input(client, db):
    inputs = [
        {"name": "Ok", "amount": "1.00"},
        {"name": "Bad", "amount": "1.001"},
        {"name": "Nowhere", "pipeline_id": UNKNOWN},
        {"name": "Won", "status": "won"},
    ]
    response = client.post(f"{BASE}/batch/create", json={"inputs": inputs})
    assert response.status_code == 207
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == [201, 422, 422, 422]
    assert results[0]["item"]["name"] == "Ok" and "amount" in results[1]["errors"]
    assert len(outbox_events(db, "deal.created")) == 1
    assert row_counts(db, "deals", "deal_totals") == {"deals": 1, "deal_totals": 1}


def test_batch_create_all_good_is_201_and_over_100_is_422(client, db):
    inputs = [{"name": f"D{i}"} for i in range(3)]
    assert client.post(f"{BASE}/batch/create", json={"inputs": inputs}).status_code == 201
    before = snapshot(db)
    too_many = [{"name": f"D{i}"} for i in range(101)]
    assert_problem(client.post(f"{BASE}/batch/create", json={"inputs": too_many}), 422)
    assert_problem(client.post(f"{BASE}/batch/create", json={"inputs": []}), 422)
    assert snapshot(db) == before


def test_batch_update_and_read(client, db):
    first, second = new_deal(client), new_deal(client)
    client.post(f"{BASE}/{second['id']}/win")
    inputs = [
        {"id": first["id"], "stage_id": DEFAULT_STAGE_IDS[1]},
        {"id": UNKNOWN, "name": "X"},
        {"name": "no id"},
        {"id": second["id"], "stage_id": DEFAULT_STAGE_IDS[1]},
    ]
    response = client.post(f"{BASE}/batch/update", json={"inputs": inputs})
    assert response.status_code == 207
    assert [r["status"] for r in response.get_json()["results"]] == [200, 404, 422, 409]
    assert len(outbox_events(db, "deal.stage_changed")) == 1
    read = client.post(f"{BASE}/batch/read", json={"ids": [first["id"], second["id"]]})
    assert read.status_code == 200
    assert read.get_json()["results"][0]["item"]["stage_id"] == DEFAULT_STAGE_IDS[1]
    partial = client.post(f"{BASE}/batch/read", json={"ids": [first["id"], UNKNOWN]})
    assert partial.status_code == 207
    assert [r["status"] for r in partial.get_json()["results"]] == [200, 404]
    assert_problem(client.post(f"{BASE}/batch/read", json={"ids": ["nope"]}), 422)


def test_an_idempotency_key_returns_the_first_answer_not_a_second_deal(client, db):
    headers = {"Idempotency-Key": "deal-1"}
    first = client.post(BASE, json={"name": "Once"}, headers=headers)
    again = client.post(BASE, json={"name": "Once"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.get_json() == again.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert row_counts(db, "deals")["deals"] == 1
    assert_problem(client.post(BASE, json={"name": "Other"}, headers=headers), 422)


def test_reads_need_a_token_and_writes_need_sales_or_admin(app, anonymous, client):
    deal = new_deal(client)
    assert_problem(anonymous.get(BASE), 401)
    for role in ("viewer", "support", "marketing"):
        headers = bearer(app, role, SALES_ID)
        assert anonymous.get(f"{BASE}/{deal['id']}", headers=headers).status_code == 200
        assert_problem(anonymous.post(BASE, json={"name": "X"}, headers=headers), 403)
        assert_problem(anonymous.post(f"{BASE}/{deal['id']}/win", headers=headers), 403)
    sales = bearer(app, "sales", SALES_ID)
    created = anonymous.post(BASE, json={"name": "Mine"}, headers=sales).get_json()
    assert created["owner_id"] == SALES_ID


def test_every_change_is_one_event_with_the_next_version(client, db):
    deal = new_deal(client)
    url = f"{BASE}/{deal['id']}"
    client.patch(url, json={"name": "Two"})
    client.patch(url, json={"stage_id": DEFAULT_STAGE_IDS[4]})
    client.post(f"{url}/win")
    client.post(f"{url}/reopen")
    client.delete(url)
    events = [e for e in outbox_events(db) if e["aggregate_id"] == deal["id"]]
    assert [e["type"] for e in events] == [
        "deal.created",
        "deal.updated",
        "deal.stage_changed",
        "deal.won",
        "deal.reopened",
        "deal.deleted",
    ]
    assert [e["aggregate_version"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert all(json.dumps(e["data"]).count("deal_id") == 1 for e in events)


# --- every route of the blueprint, from the URL map ----------------------------------------

ROUTES = api_routes("deals")
WRITES = [(m, r) for m, r in ROUTES if m in ("POST", "PATCH", "PUT")]
WITH_ID = [(m, r) for m, r in ROUTES if "<uuid:" in r]


def test_every_deal_route_is_covered():
    assert len(WRITES) == 9 and len(WITH_ID) == 6


@pytest.mark.parametrize(("method", "rule"), WRITES)
@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{broken", 400), (b"\xff\xfe", 400), (b'{"surely_not_a_field": 1}', 422)],
)
def test_bad_bodies_are_refused_and_change_nothing(client, db, method, rule, body, status):
    deal = new_deal(client)
    before = snapshot(db)
    response = client.open(
        path_for(rule, {"deal_id": deal["id"]}),
        method=method,
        data=body,
        content_type="application/json",
    )
    assert_problem(response, status)
    assert snapshot(db) == before


@pytest.mark.parametrize(("method", "rule"), WITH_ID)
def test_unknown_ids_are_404_and_change_nothing(client, db, method, rule):
    new_deal(client)
    before = snapshot(db)
    body = {"reason": "x"} if rule.endswith("/lose") else {}
    response = client.open(path_for(rule, unknown_ids(["deal_id"])), method=method, json=body)
    assert_problem(response, 404)
    assert snapshot(db) == before


@pytest.mark.parametrize(("method", "rule"), WITH_ID)
def test_malformed_ids_are_404(client, method, rule):
    response = client.open(rule.replace("<uuid:", "x").replace(">", "y"), method=method, json={})
    assert_problem(response, 404)
