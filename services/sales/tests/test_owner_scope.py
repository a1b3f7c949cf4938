"""A sales user sees and changes only their own leads, deals and tasks, unless granted the
team's; admins and other roles see everything; reports stay the team's figures."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.testing import token_for

NEW = {
    "leads": {"first_name": "L", "email": "l@x.example"},
    "deals": {"name": "Mine"},
    "tasks": {"title": "Mine"},
}
RENAME = {"leads": {"first_name": "X"}, "deals": {"name": "X"}, "tasks": {"title": "X"}}
ANA = "00000000-0000-4000-8000-0000000000a1"
BEN = "00000000-0000-4000-8000-0000000000b2"


def client_of(app: Any, subject: str, role: str = "sales", team: bool = False) -> Any:
    token = token_for(app, role, subject, team=team)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def ana(app):
    return client_of(app, ANA)


@pytest.fixture
def ben(app):
    return client_of(app, BEN)


def made(answer: Any) -> dict[str, Any]:
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


def records(ana: Any, ben: Any) -> dict[str, dict[str, Any]]:
    """A lead, a deal and a task of Ben's (made by Ben, owner by default)."""
    return {
        "leads": made(ben.post("/api/v1/leads", json={"first_name": "B", "email": "b@x.example"})),
        "deals": made(ben.post("/api/v1/deals", json={"name": "Ben's deal"})),
        "tasks": made(ben.post("/api/v1/tasks", json={"title": "Call back"})),
    }


@pytest.mark.parametrize("kind", ["leads", "deals", "tasks"])
def test_a_sales_user_cannot_see_or_change_someone_elses_record(app, ana, ben, kind):
    theirs = records(ana, ben)[kind]
    url = f"/api/v1/{kind}/{theirs['id']}"
    assert ben.get(url).status_code == 200
    assert ana.get(url).status_code == 404
    assert ana.patch(url, json=RENAME[kind]).status_code == 404
    assert ana.delete(url).status_code == 404
    assert ana.get(f"/api/v1/{kind}").get_json()["items"] == []
    if kind != "tasks":  # tasks have no search
        searched = ana.post(f"/api/v1/{kind}/search", json={"filter_groups": []})
        assert searched.status_code == 200 and searched.get_json()["items"] == []
    assert [item["id"] for item in ben.get(f"/api/v1/{kind}").get_json()["items"]] == [theirs["id"]]
    assert ben.get(url).status_code == 200  # untouched


def test_a_sales_user_sees_what_they_own_and_creates_for_themselves(app, ana, ben):
    records(ana, ben)
    mine = made(ana.post("/api/v1/deals", json={"name": "Ana's deal"}))
    assert mine["owner_id"] == ANA
    assert [deal["id"] for deal in ana.get("/api/v1/deals").get_json()["items"]] == [mine["id"]]
    assert ana.post(f"/api/v1/deals/{mine['id']}/win", json={}).status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/deals", {"name": "For Ben", "owner_id": BEN}),
        ("/api/v1/leads", {"first_name": "L", "email": "l@x.example", "owner_id": None}),
        ("/api/v1/tasks", {"title": "Ben's now", "owner_id": BEN}),
    ],
)
def test_a_sales_user_cannot_give_a_record_to_someone_else(app, ana, db, path, body):
    answer = ana.post(path, json=body)
    assert answer.status_code == 403
    assert answer.content_type == "application/problem+json"
    assert ana.get(path).get_json()["items"] == []


@pytest.mark.parametrize("kind", ["deals", "leads"])
def test_a_batch_refuses_each_input_that_gives_a_record_away(app, ana, kind):
    body = {"leads": {"first_name": "L", "email": "l@x.example"}, "deals": {"name": "x"}}[kind]
    answer = ana.post(f"/api/v1/{kind}/batch/create", json={"inputs": [{**body, "owner_id": BEN}]})
    assert answer.status_code == 207
    assert answer.get_json()["results"][0]["status"] == 403
    assert ana.get(f"/api/v1/{kind}").get_json()["items"] == []


# A body the owner check once read as "no JSON" while the route parsed it anyway.
NOT_JSON = [
    {"content_type": "text/plain"},
    {},  # no Content-Type at all
    {"content_type": "application/x-www-form-urlencoded"},
    {"content_type": "application/json; charset=latin-1"},
]
JSON_VARIANTS = [
    {"content_type": "application/json; charset=utf-8"},
    {"content_type": "Application/JSON;charset=UTF-8"},
    {"content_type": "application/merge-patch+json"},
]


@pytest.mark.parametrize("kind", ["deals", "leads", "tasks"])
@pytest.mark.parametrize(
    ("how", "status"), [(h, 415) for h in NOT_JSON] + [(h, 403) for h in JSON_VARIANTS]
)
def test_a_body_of_any_media_type_cannot_give_a_record_away(app, ana, kind, how, status):
    mine = made(ana.post(f"/api/v1/{kind}", json=NEW[kind]))
    give = json.dumps({"owner_id": BEN})

    answer = ana.patch(f"/api/v1/{kind}/{mine['id']}", data=give, **how)
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.content_type == "application/problem+json"
    created = ana.post(f"/api/v1/{kind}", data=json.dumps({**NEW[kind], "owner_id": BEN}), **how)
    assert created.status_code == status

    assert [item["id"] for item in ana.get(f"/api/v1/{kind}").get_json()["items"]] == [mine["id"]]
    assert ana.get(f"/api/v1/{kind}/{mine['id']}").get_json()["owner_id"] == ANA


def test_team_visibility_and_other_roles_see_every_record(app, ana, ben, client):
    theirs = records(ana, ben)
    team = client_of(app, ANA, team=True)
    viewer = client_of(app, ANA, role="viewer")
    for kind, record in theirs.items():
        url = f"/api/v1/{kind}/{record['id']}"
        assert team.get(url).status_code == 200
        assert viewer.get(url).status_code == 200
        assert client.get(url).status_code == 200  # admin


def test_reports_stay_the_teams_figures(app, ana, ben):
    records(ana, ben)
    assert (
        ana.get("/api/v1/reports/pipeline").get_json()
        == ben.get("/api/v1/reports/pipeline").get_json()
    )
