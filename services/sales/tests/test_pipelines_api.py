"""The pipelines HTTP API: pipelines and their stages, success and bad input, both databases."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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

TABLES = ("pipelines", "stages", "deals", "deal_totals", "outbox")
BASE = "/api/v1/pipelines"


def stage_names(pipeline: dict) -> list[str]:
    return [stage["name"] for stage in pipeline["stages"]]


def test_the_default_pipeline_exists_with_its_stages_in_order(client):
    page = client.get(BASE).get_json()
    [default] = [p for p in page["items"] if p["is_default"]]
    assert default["id"] == DEFAULT_PIPELINE
    assert [s["id"] for s in default["stages"]] == DEFAULT_STAGE_IDS
    assert [s["position"] for s in default["stages"]] == [0, 1, 2, 3, 4]
    assert [s["probability"] for s in default["stages"]] == [10, 25, 50, 75, 90]
    response = client.get(f"{BASE}/{DEFAULT_PIPELINE}")
    assert response.status_code == 200 and response.headers["ETag"] == '"1"'


def test_creating_a_pipeline_with_stages_answers_201_and_records_an_event(client, db):
    stages = [{"name": "Intro", "probability": 5}, {"name": "Offer", "probability": 60}]
    response = client.post(BASE, json={"name": "Partners", "stages": stages})
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"{BASE}/{body['id']}"
    assert body["is_default"] is False and body["version"] == 1
    assert stage_names(body) == ["Intro", "Offer"]
    assert [s["position"] for s in body["stages"]] == [0, 1]
    [event] = outbox_events(db, "pipeline.created")
    assert event["aggregate_id"] == body["id"] and event["aggregate_version"] == 1
    assert [s["name"] for s in event["data"]["stages"]] == ["Intro", "Offer"]
    assert client.get(f"{BASE}/{body['id']}").get_json() == body


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ("{nope", 400, None),
        ("[]", 400, None),
        ('{"name": "P"}', 422, "stages"),
        ('{"name": "P", "stages": []}', 422, "stages"),
        ('{"stages": [{"name": "A", "probability": 1}]}', 422, "name"),
        ('{"name": "", "stages": [{"name": "A", "probability": 1}]}', 422, "name"),
        ('{"name": "P", "stages": [{"name": "A\\u0000", "probability": 1}]}', 422, "stages"),
        ('{"name": "P", "stages": [{"name": "A", "probability": 101}]}', 422, "stages"),
        ('{"name": "P", "stages": [{"name": "A", "probability": -1}]}', 422, "stages"),
        ('{"name": "P", "stages": [{"name": "A", "probability": 12.5}]}', 422, "stages"),
        ('{"name": "P", "stages": [{"name": "A"}]}', 422, "stages"),
        ('{"name": "P", "stages": [{"name": "A", "probability": 1, "x": 1}]}', 422, "stages"),
        (
            '{"name": "P", "colour": "red", "stages": [{"name": "A", "probability": 1}]}',
            422,
            "colour",
        ),
        (
            '{"name": "P", "stages": [{"name": "A", "probability": 1}, '
            '{"name": " a ", "probability": 2}]}',
            422,
            "stages",
        ),
    ],
)
def test_bad_pipeline_input_is_refused_and_changes_nothing(client, db, payload, status, field):
    before = row_counts(db, *TABLES)
    response = client.post(BASE, data=payload, content_type="application/json")
    body = assert_problem(response, status)
    if field:
        assert field in body["errors"]
    assert row_counts(db, *TABLES) == before


def test_pipeline_names_are_unique_case_insensitively(client, db):
    new_pipeline(client, "Renewals")
    before = row_counts(db, *TABLES)
    response = client.post(
        BASE, json={"name": "RENEWALS", "stages": [{"name": "A", "probability": 1}]}
    )
    assert "name" in assert_problem(response, 409)["errors"]
    assert row_counts(db, *TABLES) == before


def test_making_a_pipeline_the_default_leaves_exactly_one_default(client, db):
    other = new_pipeline(client)
    response = client.patch(f"{BASE}/{other['id']}", json={"is_default": True})
    assert response.status_code == 200 and response.get_json()["is_default"] is True
    defaults = [p["id"] for p in client.get(BASE).get_json()["items"] if p["is_default"]]
    assert defaults == [other["id"]]
    updated = {e["aggregate_id"]: e for e in outbox_events(db, "pipeline.updated")}
    assert updated[DEFAULT_PIPELINE]["data"]["is_default"] is False
    assert updated[other["id"]]["data"]["is_default"] is True
    deal = new_deal(client)
    assert deal["pipeline_id"] == other["id"] and deal["stage_id"] == other["stages"][0]["id"]


def test_concurrent_default_switches_leave_exactly_one_default(app, client, db):
    if not db.is_postgres:
        pytest.skip("row locks are PostgreSQL's; SQLite runs one writer at a time")
    ids = [new_pipeline(client, f"P{i}")["id"] for i in range(4)]
    headers = bearer(app, "admin", ADMIN_ID)

    def switch(barrier: threading.Barrier, pipeline_id: str) -> Any:
        barrier.wait(timeout=10)
        url = f"{BASE}/{pipeline_id}"
        return app.test_client().patch(url, json={"is_default": True}, headers=headers)

    for _round in range(3):
        barrier = threading.Barrier(len(ids))
        with ThreadPoolExecutor(len(ids)) as pool:
            responses = list(pool.map(lambda pid, b=barrier: switch(b, pid), ids))
        assert [r.status_code for r in responses] == [200] * len(ids)
        defaults = [p["id"] for p in client.get(BASE).get_json()["items"] if p["is_default"]]
        assert len(defaults) == 1


def test_creating_a_pipeline_as_the_default_takes_over_the_default(client):
    stages = [{"name": "A", "probability": 1}]
    body = client.post(BASE, json={"name": "New", "is_default": True, "stages": stages})
    assert body.status_code == 201
    defaults = [p["id"] for p in client.get(BASE).get_json()["items"] if p["is_default"]]
    assert defaults == [body.get_json()["id"]]


def test_the_default_pipeline_cannot_be_unset_or_deleted(client, db):
    before = row_counts(db, *TABLES)
    url = f"{BASE}/{DEFAULT_PIPELINE}"
    assert (
        "is_default" in assert_problem(client.patch(url, json={"is_default": False}), 409)["errors"]
    )
    assert_problem(client.delete(url), 409)
    assert row_counts(db, *TABLES) == before


def test_renaming_a_pipeline_bumps_its_version_and_a_stale_if_match_is_409(client, db):
    pipeline = new_pipeline(client)
    url = f"{BASE}/{pipeline['id']}"
    response = client.patch(url, json={"name": "Upsell"}, headers={"If-Match": '"1"'})
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    assert response.get_json()["name"] == "Upsell"
    [event] = outbox_events(db, "pipeline.updated")
    assert event["data"]["changed"] == ["name"] and event["aggregate_version"] == 2
    assert_problem(client.patch(url, json={"name": "Late"}, headers={"If-Match": '"1"'}), 409)
    assert client.get(url).get_json()["name"] == "Upsell"


@pytest.mark.parametrize(
    "payload",
    [{"name": ""}, {"stages": []}, {"is_default": "maybe"}, {"version": 3}, {"name": None}],
)
def test_bad_pipeline_patches_are_422_and_change_nothing(client, db, payload):
    pipeline = new_pipeline(client)
    before = snapshot(db)
    assert_problem(client.patch(f"{BASE}/{pipeline['id']}", json=payload), 422)
    assert snapshot(db) == before


def test_renaming_to_another_pipelines_name_is_409(client):
    pipeline = new_pipeline(client)
    response = client.patch(f"{BASE}/{pipeline['id']}", json={"name": "sales PIPELINE"})
    assert_problem(response, 409)


def test_a_pipeline_holding_deals_cannot_be_deleted_until_they_go(client, db):
    pipeline = new_pipeline(client)
    deal = new_deal(client, pipeline_id=pipeline["id"])
    client.post(f"/api/v1/deals/{deal['id']}/win")
    before = row_counts(db, *TABLES)
    body = assert_problem(client.delete(f"{BASE}/{pipeline['id']}"), 409)
    assert "1 deal" in body["detail"]
    assert row_counts(db, *TABLES) == before
    assert client.delete(f"/api/v1/deals/{deal['id']}").status_code == 204
    assert client.delete(f"{BASE}/{pipeline['id']}").status_code == 204
    assert_problem(client.get(f"{BASE}/{pipeline['id']}"), 404)
    [event] = outbox_events(db, "pipeline.deleted")
    assert event["aggregate_id"] == pipeline["id"] and len(event["data"]["stages"]) == 3


def test_listing_pipelines_pages_with_a_cursor(client):
    for name in ("B", "A", "C"):
        new_pipeline(client, name)
    first = client.get(f"{BASE}?limit=2").get_json()
    second = client.get(f"{BASE}?limit=2&cursor={first['next_cursor']}").get_json()
    names = [p["name"] for p in first["items"] + second["items"]]
    assert names == ["A", "B", "C", "Sales pipeline"] and second["next_cursor"] is None


@pytest.mark.parametrize("query", ["limit=0", "sort=probability", "cursor=zzz", "colour=red"])
def test_bad_pipeline_list_parameters_are_422(client, query):
    assert_problem(client.get(f"{BASE}?{query}"), 422)


def test_adding_a_stage_at_a_position_shifts_the_later_stages(client, db):
    pipeline = new_pipeline(client)
    url = f"{BASE}/{pipeline['id']}/stages"
    response = client.post(url, json={"name": "Demo", "probability": 15, "position": 1})
    assert response.status_code == 201
    stage = response.get_json()
    assert response.headers["Location"] == f"{url}/{stage['id']}"
    assert stage["position"] == 1
    assert stage_names(client.get(f"{BASE}/{pipeline['id']}").get_json()) == [
        "S0",
        "Demo",
        "S1",
        "S2",
    ]
    last = client.post(url, json={"name": "Last", "probability": 99}).get_json()
    assert last["position"] == 4
    assert client.get(f"{url}/{last['id']}").get_json() == last
    assert [s["name"] for s in client.get(url).get_json()["items"]][-1] == "Last"
    [first, second] = outbox_events(db, "pipeline.updated")
    assert first["data"]["changed"] == ["stages"] and second["aggregate_version"] == 3


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"name": "s1", "probability": 5}, 409),
        ({"name": "New", "probability": 5, "position": 4}, 422),
        ({"name": "New", "probability": 5, "position": -1}, 422),
        ({"name": "New"}, 422),
        ({"name": "New", "probability": 5, "pipeline_id": UNKNOWN}, 422),
    ],
)
def test_bad_stages_are_refused_and_change_nothing(client, db, payload, status):
    pipeline = new_pipeline(client)
    before = snapshot(db)
    assert_problem(client.post(f"{BASE}/{pipeline['id']}/stages", json=payload), status)
    assert snapshot(db) == before


def test_renaming_a_stage_and_changing_its_probability_records_the_pipeline(client, db):
    pipeline = new_pipeline(client)
    stage = pipeline["stages"][1]
    url = f"{BASE}/{pipeline['id']}/stages/{stage['id']}"
    response = client.patch(url, json={"name": "Proposal sent", "probability": 55})
    assert response.status_code == 200
    assert response.get_json()["name"] == "Proposal sent"
    assert response.get_json()["probability"] == 55
    [event] = outbox_events(db, "pipeline.updated")
    assert event["data"]["stages"][1]["name"] == "Proposal sent"
    assert_problem(client.patch(url, json={"name": "S0"}), 409)
    assert_problem(client.patch(url, json={"probability": 200}), 422)
    other = f"{BASE}/{DEFAULT_PIPELINE}/stages/{stage['id']}"
    assert_problem(client.patch(other, json={"name": "X"}), 404)


def test_reordering_stages_takes_the_new_order(client, db):
    pipeline = new_pipeline(client)
    ids = [s["id"] for s in pipeline["stages"]]
    url = f"{BASE}/{pipeline['id']}/stages/order"
    response = client.put(url, json={"stage_ids": [ids[2], ids[0], ids[1]]})
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    assert stage_names(response.get_json()) == ["S2", "S0", "S1"]
    assert [s["position"] for s in response.get_json()["stages"]] == [0, 1, 2]
    assert len(outbox_events(db, "pipeline.updated")) == 1


@pytest.mark.parametrize(
    "order",
    [
        lambda ids: ids[:2],
        lambda ids: [*ids, ids[0]],
        lambda ids: [ids[0], ids[0], ids[1]],
        lambda ids: [ids[0], ids[1], DEFAULT_STAGE_IDS[0]],
        lambda ids: [],
    ],
)
def test_a_reorder_that_is_not_a_permutation_is_422(client, db, order):
    pipeline = new_pipeline(client)
    ids = [s["id"] for s in pipeline["stages"]]
    before = snapshot(db)
    url = f"{BASE}/{pipeline['id']}/stages/order"
    assert_problem(client.put(url, json={"stage_ids": order(ids)}), 422)
    assert snapshot(db) == before


def test_a_stage_holding_open_deals_cannot_be_deleted_without_move_to(client, db):
    pipeline = new_pipeline(client)
    stage = pipeline["stages"][0]
    new_deal(client, pipeline_id=pipeline["id"])
    new_deal(client, pipeline_id=pipeline["id"])
    before = snapshot(db)
    response = client.delete(f"{BASE}/{pipeline['id']}/stages/{stage['id']}")
    assert "2 open deal" in assert_problem(response, 409)["detail"]
    assert snapshot(db) == before


def test_deleting_a_stage_moves_its_deals_to_move_to(client, db):
    pipeline = new_pipeline(client)
    source, target = pipeline["stages"][0]["id"], pipeline["stages"][2]["id"]
    open_deal = new_deal(client, pipeline_id=pipeline["id"], amount="100.00")
    won = new_deal(client, pipeline_id=pipeline["id"], amount="50.00")
    client.post(f"/api/v1/deals/{won['id']}/win")
    url = f"{BASE}/{pipeline['id']}/stages/{source}?move_to={target}"
    assert client.delete(url).status_code == 204
    moved = client.get(f"/api/v1/deals/{open_deal['id']}").get_json()
    assert moved["stage_id"] == target and moved["version"] == 2
    assert client.get(f"/api/v1/deals/{won['id']}").get_json()["stage_id"] == target
    [changed] = outbox_events(db, "deal.stage_changed")
    assert changed["data"]["from_stage_id"] == source and changed["data"]["to_stage_id"] == target
    assert changed["aggregate_version"] == 2
    assert [e["aggregate_id"] for e in outbox_events(db, "deal.updated")] == [won["id"]]
    after = client.get(f"{BASE}/{pipeline['id']}").get_json()
    assert stage_names(after) == ["S1", "S2"] and after["stages"][0]["position"] == 0
    assert outbox_events(db, "pipeline.updated")[-1]["data"]["deleted_stage_id"] == source
    assert_problem(client.get(f"{BASE}/{pipeline['id']}/stages/{source}"), 404)


def test_closed_deals_of_a_deleted_stage_go_to_the_first_remaining_stage(client, db):
    pipeline = new_pipeline(client)
    middle = pipeline["stages"][1]["id"]
    lost = new_deal(client, pipeline_id=pipeline["id"], stage_id=middle)
    client.post(f"/api/v1/deals/{lost['id']}/lose", json={"reason": "Budget"})
    assert client.delete(f"{BASE}/{pipeline['id']}/stages/{middle}").status_code == 204
    deal = client.get(f"/api/v1/deals/{lost['id']}").get_json()
    assert deal["stage_id"] == pipeline["stages"][0]["id"] and deal["status"] == "lost"


def test_the_last_stage_of_a_pipeline_cannot_be_deleted(client, db):
    pipeline = new_pipeline(client, stages=1)
    before = snapshot(db)
    url = f"{BASE}/{pipeline['id']}/stages/{pipeline['stages'][0]['id']}"
    assert "last stage" in assert_problem(client.delete(url), 409)["detail"]
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "move_to",
    ["same", DEFAULT_STAGE_IDS[0], UNKNOWN, "not-a-uuid", "other&colour=red"],
)
def test_move_to_must_be_another_stage_of_the_same_pipeline(client, db, move_to):
    pipeline = new_pipeline(client)
    stage = pipeline["stages"][0]["id"]
    new_deal(client, pipeline_id=pipeline["id"])
    move_to = move_to.replace("same", stage).replace("other", pipeline["stages"][1]["id"])
    before = snapshot(db)
    response = client.delete(f"{BASE}/{pipeline['id']}/stages/{stage}?move_to={move_to}")
    assert_problem(response, 422)
    assert snapshot(db) == before


def test_every_role_may_read_pipelines_and_only_an_admin_change_them(app, anonymous, client, db):
    assert_problem(anonymous.get(BASE), 401)
    body = {"name": "X", "stages": [{"name": "A", "probability": 1}]}
    pipeline = new_pipeline(client, "Team", stages=3)
    one, stage = f"{BASE}/{pipeline['id']}", pipeline["stages"][0]["id"]
    writes = [
        ("POST", BASE, body),
        ("PATCH", one, {"name": "Mine"}),
        ("DELETE", one, None),
        ("POST", f"{one}/stages", {"name": "B", "probability": 5}),
        ("PATCH", f"{one}/stages/{stage}", {"probability": 99}),
        ("PUT", f"{one}/stages/order", {"stage_ids": [s["id"] for s in pipeline["stages"][::-1]]}),
        ("DELETE", f"{one}/stages/{stage}?move_to={pipeline['stages'][1]['id']}", None),
    ]
    before = snapshot(db)
    for role in ("sales", "viewer", "support", "marketing"):
        headers = bearer(app, role, SALES_ID)
        assert anonymous.get(BASE, headers=headers).status_code == 200
        assert anonymous.get(one, headers=headers).status_code == 200
        for method, path, payload in writes:
            answer = anonymous.open(path, method=method, json=payload, headers=headers)
            assert_problem(answer, 403)
    assert snapshot(db) == before
    admin = bearer(app, "admin", ADMIN_ID)
    assert anonymous.post(BASE, json=body, headers=admin).status_code == 201


def test_an_idempotency_key_creates_one_pipeline(client, db):
    body = {"name": "Once", "stages": [{"name": "A", "probability": 1}]}
    headers = {"Idempotency-Key": "pipeline-1"}
    first = client.post(BASE, json=body, headers=headers)
    again = client.post(BASE, json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.get_json()["id"] == again.get_json()["id"]
    assert row_counts(db, "pipelines")["pipelines"] == 2


# --- every route of the blueprint, from the URL map ----------------------------------------

ROUTES = api_routes("pipelines")
WRITES = [(m, r) for m, r in ROUTES if m in ("POST", "PATCH", "PUT")]
WITH_ID = [(m, r) for m, r in ROUTES if "<uuid:" in r]


@pytest.fixture
def ids(client) -> dict[str, str]:
    pipeline = new_pipeline(client, "Sweep")
    return {"pipeline_id": pipeline["id"], "stage_id": pipeline["stages"][1]["id"]}


def test_every_pipeline_route_is_covered():
    assert len(WRITES) == 5 and len(WITH_ID) == 9


@pytest.mark.parametrize(("method", "rule"), WRITES)
@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{broken", 400), (b"\xff\xfe", 400), (b'{"surely_not_a_field": 1}', 422)],
)
def test_bad_bodies_are_refused_and_change_nothing(client, db, ids, method, rule, body, status):
    before = snapshot(db)
    response = client.open(
        path_for(rule, ids), method=method, data=body, content_type="application/json"
    )
    assert_problem(response, status)
    assert snapshot(db) == before


@pytest.mark.parametrize(("method", "rule"), WITH_ID)
def test_unknown_ids_are_404_and_change_nothing(client, db, ids, method, rule):
    before = snapshot(db)
    bodies = {
        "PUT": {"stage_ids": [ids["stage_id"]]},
        "POST": {"name": "Z", "probability": 1},
        "PATCH": {"name": "Z"},
    }
    url = path_for(rule, unknown_ids(list(ids)))
    assert_problem(client.open(url, method=method, json=bodies.get(method)), 404)
    if "stage_id" in rule:  # a known pipeline with a stage of another pipeline
        url = path_for(rule, {**ids, "stage_id": DEFAULT_STAGE_IDS[0]})
        assert_problem(client.open(url, method=method, json=bodies.get(method)), 404)
    assert snapshot(db) == before


@pytest.mark.parametrize(("method", "rule"), WITH_ID)
def test_malformed_ids_are_404(client, method, rule):
    response = client.open(rule.replace("<uuid:", "x").replace(">", "y"), method=method, json={})
    assert_problem(response, 404)
