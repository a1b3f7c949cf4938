"""The SLA policies HTTP API: CRUD, bad input, roles, and open tickets following changes."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from services.support import sla
from services.support.business_hours import add_business_seconds, parse_calendar
from services.support.models import SlaPolicy, Ticket
from services.support.tests.conftest import row_counts, token_for
from services.support.tests.test_sla import OFFICE, at, change, hours, load, open_ticket
from shared.events import utcnow

BASE = "/api/v1/sla-policies"
TABLES = ("sla_policies", "tickets", "outbox", "idempotency_keys")
UNKNOWN = "5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11"


def policy_body(**fields: Any) -> dict[str, Any]:
    body = {
        "name": "Normal tickets",
        "priority": "normal",
        "first_response_minutes": 60,
        "resolution_minutes": 480,
    }
    return {**body, **fields}


def new_policy(client, **fields: Any) -> dict[str, Any]:
    response = client.post(BASE, json=policy_body(**fields))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def assert_problem(response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["title"]
    return body


def events(db, event_type: str) -> list[dict[str, Any]]:
    table = db.outbox
    statement = sa.select(table.c.payload).where(table.c.event_type == event_type)
    with db.engine.connect() as connection:
        return [json.loads(payload) for payload in connection.execute(statement).scalars()]


def as_role(app, role: str):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app, role)}"
    return client


# --- create, read, list ---------------------------------------------------------------------


def test_creating_a_policy_answers_201_with_location_etag_and_an_event(client, db):
    response = client.post(BASE, json=policy_body(calendar={**OFFICE, "days": [4, 0, 2, 1, 3]}))
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"{BASE}/{body['id']}"
    assert response.headers["ETag"] == '"1"'
    assert body["priority"] == "normal" and body["version"] == 1
    assert body["calendar"] == OFFICE  # days in order
    assert body["created_at"].endswith("Z") and body["updated_at"] == body["created_at"]
    assert client.get(f"{BASE}/{body['id']}").get_json() == body
    [event] = events(db, "sla_policy.created")
    assert event["aggregate_id"] == body["id"] and event["data"]["priority"] == "normal"


def test_a_calendar_may_run_until_midnight_and_be_null(client):
    day = {"timezone": "UTC", "days": [5, 6], "start": "00:00", "end": "24:00"}
    assert new_policy(client, calendar=day)["calendar"] == day
    assert new_policy(client, priority="high", calendar=None)["calendar"] is None
    assert new_policy(client, priority="low", resolution_minutes=60, first_response_minutes=60)


BAD_INPUT = [
    ("{nope", 400, None),
    ("[]", 400, None),
    ("", 400, None),
    ("{}", 422, "priority"),
    (policy_body(priority="critical"), 422, "priority"),
    (policy_body(name=""), 422, "name"),
    (policy_body(name="   "), 422, "name"),
    (policy_body(name="A\u0000"), 422, "name"),
    (policy_body(first_response_minutes=0), 422, "first_response_minutes"),
    (policy_body(resolution_minutes=525_601), 422, "resolution_minutes"),
    (policy_body(first_response_minutes=1.5), 422, "first_response_minutes"),
    (policy_body(first_response_minutes="60"), 422, "first_response_minutes"),
    (policy_body(first_response_minutes=True), 422, "first_response_minutes"),
    (policy_body(first_response_minutes=10**30), 422, "first_response_minutes"),
    (policy_body(first_response_minutes=500, resolution_minutes=480), 422, "resolution_minutes"),
    (policy_body(colour="red"), 422, "colour"),
    (policy_body(id="not-a-uuid"), 422, "id"),
    (policy_body(calendar="24/7"), 422, "calendar"),
    (policy_body(calendar=[]), 422, "calendar"),
    (policy_body(calendar={**OFFICE, "timezone": "Mars/Olympus"}), 422, "calendar"),
    (policy_body(calendar={**OFFICE, "timezone": "../../etc/passwd"}), 422, "calendar"),
    (policy_body(calendar={**OFFICE, "timezone": 1}), 422, "calendar"),
    (policy_body(calendar={**OFFICE, "days": []}), 422, "calendar"),
    (policy_body(calendar={**OFFICE, "days": [0, 0]}), 422, "calendar"),
    (policy_body(calendar={**OFFICE, "days": [7]}), 422, "calendar"),
    (policy_body(calendar={**OFFICE, "days": ["1"]}), 422, "calendar"),
    (policy_body(calendar={**OFFICE, "start": "9:00"}), 422, "calendar"),
    (policy_body(calendar={**OFFICE, "start": "24:00", "end": "24:00"}), 422, "calendar"),
    (policy_body(calendar={**OFFICE, "end": "25:00"}), 422, "calendar"),
    (policy_body(calendar={**OFFICE, "start": "17:00", "end": "09:00"}), 422, "calendar"),
    (policy_body(calendar={**OFFICE, "end": "09:00"}), 422, "calendar"),
    (policy_body(calendar={**OFFICE, "lunch": "12:00"}), 422, "calendar"),
    (policy_body(calendar={"timezone": "UTC"}), 422, "calendar"),
]


@pytest.mark.parametrize(("payload", "status", "field"), BAD_INPUT)
def test_bad_policy_input_is_refused_and_changes_nothing(client, db, payload, status, field):
    before = row_counts(db, *TABLES)
    data = payload if isinstance(payload, str) else json.dumps(payload)
    response = client.post(
        BASE, data=data, content_type="application/json", headers={"Idempotency-Key": "k1"}
    )
    body = assert_problem(response, status)
    if field:
        assert field in body["errors"]
    assert row_counts(db, *TABLES) == before


def test_a_second_policy_for_a_priority_is_a_conflict(client, db):
    first = new_policy(client)
    before = row_counts(db, *TABLES)
    response = client.post(BASE, json=policy_body(name="Another"))
    assert "priority" in assert_problem(response, 409)["errors"]
    assert_problem(client.post(BASE, json=policy_body(id=first["id"], priority="low")), 409)
    assert row_counts(db, *TABLES) == before


def test_concurrent_creates_for_one_priority_leave_one_policy(app, db):
    def create(index: int) -> int:
        client = as_role(app, "admin")
        return client.post(BASE, json=policy_body(name=f"P{index}")).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(create, range(6)))
    assert statuses == [201, 409, 409, 409, 409, 409]
    assert row_counts(db, "sla_policies") == {"sla_policies": 1}


def test_the_same_idempotency_key_returns_the_first_answer(client, db):
    headers = {"Idempotency-Key": "create-normal"}
    first = client.post(BASE, json=policy_body(), headers=headers)
    again = client.post(BASE, json=policy_body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"]
    assert row_counts(db, "sla_policies") == {"sla_policies": 1}


def test_unknown_and_malformed_ids_are_404(client):
    for method in ("get", "patch", "delete"):
        for ident in (UNKNOWN, "nope"):
            kwargs = {"json": {"name": "X"}} if method == "patch" else {}
            assert_problem(getattr(client, method)(f"{BASE}/{ident}", **kwargs), 404)


def test_listing_filters_sorts_and_pages(client):
    for priority, name in (("low", "C"), ("normal", "A"), ("high", "B")):
        new_policy(client, priority=priority, name=name)
    page = client.get(BASE).get_json()
    assert [p["name"] for p in page["items"]] == ["A", "B", "C"] and page["next_cursor"] is None
    assert [p["name"] for p in client.get(f"{BASE}?sort=-name").get_json()["items"]] == [
        "C",
        "B",
        "A",
    ]
    assert [p["priority"] for p in client.get(f"{BASE}?priority=high").get_json()["items"]] == [
        "high"
    ]
    first = client.get(f"{BASE}?limit=2").get_json()
    rest = client.get(f"{BASE}?limit=2&cursor={first['next_cursor']}").get_json()
    assert [p["name"] for p in first["items"] + rest["items"]] == ["A", "B", "C"]


@pytest.mark.parametrize(
    "query",
    ["sort=colour", "priority=critical", "limit=0", "limit=x", "cursor=zz", "x=1", "sort=a&sort=b"],
)
def test_bad_list_parameters_are_422(client, query):
    assert_problem(client.get(f"{BASE}?{query}"), 422)


# --- change and delete ----------------------------------------------------------------------


def test_patching_a_policy_bumps_its_version_and_honours_if_match(client, db):
    policy = new_policy(client)
    url = f"{BASE}/{policy['id']}"
    response = client.patch(url, json={"name": "Renamed"}, headers={"If-Match": '"1"'})
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    assert response.get_json()["name"] == "Renamed" and response.get_json()["version"] == 2
    before = row_counts(db, *TABLES)
    assert_problem(client.patch(url, json={"name": "Stale"}, headers={"If-Match": '"1"'}), 409)
    assert_problem(client.patch(url, json={"name": "Bad"}, headers={"If-Match": "one"}), 400)
    assert row_counts(db, *TABLES) == before
    same = client.patch(url, json={"name": "Renamed"})
    assert same.get_json()["version"] == 2  # nothing changed
    [event] = events(db, "sla_policy.updated")
    assert event["data"]["changed"] == ["name"] and event["aggregate_version"] == 2


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        ({"first_response_minutes": 600}, 422, "resolution_minutes"),
        ({"resolution_minutes": 30}, 422, "resolution_minutes"),
        ({"priority": "high"}, 409, "priority"),
        ({"calendar": {**OFFICE, "timezone": "Nowhere/Land"}}, 422, "calendar"),
        ({"id": UNKNOWN}, 422, "id"),
        ({"version": 7}, 422, "version"),
        ({"name": None}, 422, "name"),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(client, db, changes, status, field):
    policy = new_policy(client)
    new_policy(client, priority="high")
    before = row_counts(db, *TABLES)
    body = assert_problem(client.patch(f"{BASE}/{policy['id']}", json=changes), status)
    assert field in body["errors"]
    assert row_counts(db, *TABLES) == before
    assert client.get(f"{BASE}/{policy['id']}").get_json() == policy


def test_deleting_a_policy_answers_204_and_honours_if_match(client, db):
    policy = new_policy(client)
    url = f"{BASE}/{policy['id']}"
    assert_problem(client.delete(url, headers={"If-Match": '"9"'}), 409)
    assert client.delete(url, headers={"If-Match": '"1"'}).status_code == 204
    assert_problem(client.get(url), 404)
    assert_problem(client.delete(url), 404)
    [event] = events(db, "sla_policy.deleted")
    assert event["data"]["id"] == policy["id"]


def test_reads_need_a_token_and_writes_need_support_or_admin(app, anonymous, db):
    policy = new_policy(as_role(app, "support"))
    url = f"{BASE}/{policy['id']}"
    assert_problem(anonymous.get(BASE), 401)
    for role in ("viewer", "sales", "marketing"):
        reader = as_role(app, role)
        assert reader.get(BASE).status_code == 200 and reader.get(url).status_code == 200
        before = row_counts(db, *TABLES)
        assert_problem(reader.post(BASE, json=policy_body(priority="low")), 403)
        assert_problem(reader.patch(url, json={"name": "X"}), 403)
        assert_problem(reader.delete(url), 403)
        assert row_counts(db, *TABLES) == before
    assert as_role(app, "support").delete(url).status_code == 204


# --- open tickets follow policy changes --------------------------------------------------------


def test_creating_a_policy_gives_open_tickets_deadlines(client, db):
    created = utcnow() - hours(1)
    open_id = open_ticket(db, created_at=created)
    closed_id = open_ticket(db, created_at=created, status="closed")
    new_policy(client, first_response_minutes=30, resolution_minutes=240)
    ticket = load(db, open_id)
    assert at(ticket.first_response_due_at) == created + hours(0.5)
    assert ticket.resolution_due_at is not None and ticket.version == 2
    assert load(db, closed_id).resolution_due_at is None
    [event] = events(db, "sla_policy.created")
    assert event["data"]["tickets_recomputed"] == 1


def test_new_targets_move_the_deadlines_of_open_tickets_only(client, db):
    policy = new_policy(client)
    created = utcnow() - hours(1)
    open_id = open_ticket(db, created_at=created)
    resolved_id = open_ticket(db, created_at=created)
    change(db, resolved_id, created + hours(0.5), status="resolved")
    other_id = open_ticket(db, created_at=created, priority="high")
    before = {ident: load(db, ident) for ident in (resolved_id, other_id)}
    response = client.patch(
        f"{BASE}/{policy['id']}", json={"first_response_minutes": 90, "resolution_minutes": 600}
    )
    assert response.status_code == 200
    ticket = load(db, open_id)
    assert at(ticket.first_response_due_at) == created + hours(1.5)
    assert at(ticket.resolution_due_at) == created + hours(10)
    assert at(ticket.resolution_warn_at) == created + hours(8)
    assert ticket.version == 2
    for ident, old in before.items():
        assert sla.sla_state(load(db, ident)) == sla.sla_state(old)
        assert load(db, ident).version == old.version
    [event] = events(db, "sla_policy.updated")
    assert event["data"]["tickets_recomputed"] == 1


def test_a_new_calendar_applies_from_now_on_to_the_running_clock(client, db):
    policy = new_policy(client, resolution_minutes=24 * 60)
    created = utcnow() - hours(2)
    ticket_id = open_ticket(db, created_at=created)
    response = client.patch(f"{BASE}/{policy['id']}", json={"calendar": OFFICE})
    assert response.status_code == 200
    ticket = load(db, ticket_id)
    # The two hours ran round the clock; the remaining 22 run in office hours.
    assert 2 * 3600 <= ticket.sla_elapsed_seconds <= 2 * 3600 + 60
    since = at(ticket.sla_running_since)
    assert since >= created + hours(2)
    remaining = 24 * 3600 - ticket.sla_elapsed_seconds
    assert at(ticket.resolution_due_at) == add_business_seconds(
        since, remaining, parse_calendar(OFFICE)
    )
    [event] = events(db, "sla_policy.updated")
    assert event["data"]["changed"] == ["calendar"] and event["data"]["tickets_recomputed"] == 1


def test_moving_a_policy_to_another_priority_moves_its_tickets(client, db):
    policy = new_policy(client)
    created = utcnow() - hours(1)
    normal_id = open_ticket(db, created_at=created)
    high_id = open_ticket(db, created_at=created, priority="high")
    assert client.patch(f"{BASE}/{policy['id']}", json={"priority": "high"}).status_code == 200
    normal, high = load(db, normal_id), load(db, high_id)
    assert normal.sla_policy_id is None and normal.resolution_due_at is None
    assert high.sla_policy_id == policy["id"]
    assert at(high.first_response_due_at) == created + hours(1)
    [event] = events(db, "sla_policy.updated")
    assert event["data"]["tickets_recomputed"] == 2


def test_deleting_a_policy_ends_the_sla_of_its_open_tickets_but_keeps_breaches(client, db):
    policy = new_policy(client)
    created = utcnow() - hours(3)
    ticket_id = open_ticket(db, created_at=created)
    change(db, ticket_id, created + hours(2), first_responded_at=created + hours(2))  # late
    resolved_id = open_ticket(db, created_at=created)
    change(db, resolved_id, created + hours(0.5), status="resolved")
    assert client.delete(f"{BASE}/{policy['id']}").status_code == 204
    ticket = load(db, ticket_id)
    assert ticket.sla_policy_id is None and ticket.resolution_due_at is None
    assert ticket.sla_running_since is None and ticket.sla_breached is True
    resolved = load(db, resolved_id)
    assert resolved.sla_policy_id is None and resolved.resolution_due_at is not None
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SlaPolicy)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Ticket)) == 2


def test_recomputing_many_tickets_is_batched_and_complete(client, db):
    created = utcnow() - hours(1)
    with db.session() as session:
        for _ in range(sla.RECOMPUTE_BATCH + 15):
            session.add(Ticket(id=str(uuid.uuid4()), subject="S", created_at=created))
    new_policy(client)
    with db.session() as session:
        dues = session.scalars(sa.select(Ticket.first_response_due_at)).all()
    assert len(dues) == sla.RECOMPUTE_BATCH + 15
    assert {at(due) for due in dues} == {created + hours(1)}
