"""The tasks HTTP API: tasks, completing, reopening, overdue lists, bad input, both databases."""

from __future__ import annotations

import pytest

from services.sales import tasks
from services.sales.models import Task
from services.sales.tests.api_helpers import (
    UNKNOWN,
    api_routes,
    assert_problem,
    bearer,
    new_deal,
    outbox_events,
    path_for,
    snapshot,
    unknown_ids,
)
from services.sales.tests.conftest import ADMIN_ID, SALES_ID, row_counts
from shared.events import utcnow

TABLES = ("tasks", "outbox")
BASE = "/api/v1/tasks"
CONTACT = "7d0c1b52-3f0e-4a39-9a53-1c2e3f4a5b6c"
PAST = "2020-01-01T09:00:00Z"
FUTURE = "2999-01-01T09:00:00Z"


def new_task(client, **fields):
    response = client.post(BASE, json={"title": "Call back", **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def titles(client, query: str) -> list[str]:
    response = client.get(f"{BASE}?{query}")
    assert response.status_code == 200, response.get_json()
    return [task["title"] for task in response.get_json()["items"]]


def test_creating_a_task_answers_201_and_records_what_reminders_need(client, db):
    deal = new_deal(client)
    response = client.post(
        BASE,
        json={
            "title": "Send the proposal",
            "due_at": "2026-12-01T10:00:00+01:00",
            "contact_id": CONTACT,
            "deal_id": deal["id"],
        },
    )
    assert response.status_code == 201
    task = response.get_json()
    assert response.headers["Location"] == f"{BASE}/{task['id']}"
    assert task["owner_id"] == ADMIN_ID and task["done"] is False
    assert task["due_at"] == "2026-12-01T09:00:00Z" and task["completed_at"] is None
    [event] = outbox_events(db, "task.created")
    data = event["data"]
    assert event["aggregate_id"] == task["id"] and event["aggregate_version"] == 1
    assert data["title"] == "Send the proposal" and data["due_at"] == "2026-12-01T09:00:00Z"
    assert data["owner_id"] == ADMIN_ID and data["contact_id"] == CONTACT
    assert data["deal_id"] == deal["id"] and data["task_id"] == task["id"]
    assert data["owner_email"] == "admin@example.com"  # the reminder's address
    fetched = client.get(f"{BASE}/{task['id']}")
    assert fetched.get_json() == task and fetched.headers["ETag"] == '"1"'


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ("{nope", 400, None),
        ("[]", 400, None),
        ("{}", 422, "title"),
        ('{"title": ""}', 422, "title"),
        ('{"title": "T", "due_at": "tomorrow"}', 422, "due_at"),
        ('{"title": "T", "due_at": "2026-12-01T10:00:00"}', 422, "due_at"),
        ('{"title": "T", "due_at": "0001-01-01T00:00:00+05:00"}', 422, "due_at"),
        ('{"title": "T\\u0000"}', 422, "title"),
        ('{"title": "T", "deal_id": "' + UNKNOWN + '"}', 422, "deal_id"),
        ('{"title": "T", "deal_id": "nope"}', 422, "deal_id"),
        ('{"title": "T", "done": "perhaps"}', 422, "done"),
        ('{"title": "T", "overdue": true}', 422, "overdue"),
        ('{"title": "T", "completed_at": "2026-01-01T00:00:00Z"}', 422, "completed_at"),
    ],
)
def test_bad_task_input_is_refused_and_changes_nothing(client, db, payload, status, field):
    before = row_counts(db, *TABLES)
    response = client.post(BASE, data=payload, content_type="application/json")
    body = assert_problem(response, status)
    if field:
        assert field in body["errors"]
    assert row_counts(db, *TABLES) == before


def test_patch_changes_given_fields_and_records_task_updated(client, db):
    task = new_task(client, notes="n")
    url = f"{BASE}/{task['id']}"
    response = client.patch(
        url, json={"title": "Call again", "due_at": FUTURE}, headers={"If-Match": '"1"'}
    )
    body = response.get_json()
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    assert body["title"] == "Call again" and body["notes"] == "n"
    [event] = outbox_events(db, "task.updated")
    assert sorted(event["data"]["changed"]) == ["due_at", "title"]
    assert event["aggregate_version"] == 2
    assert_problem(client.patch(url, json={"title": "Late"}, headers={"If-Match": '"1"'}), 409)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"title": None}, "title"),
        ({"deal_id": UNKNOWN}, "deal_id"),
        ({"id": UNKNOWN}, "id"),
        ({"done": "maybe"}, "done"),
        ({"owner_id": 7}, "owner_id"),
    ],
)
def test_bad_task_patches_are_422_and_change_nothing(client, db, payload, field):
    task = new_task(client)
    before = snapshot(db)
    body = assert_problem(client.patch(f"{BASE}/{task['id']}", json=payload), 422)
    assert field in body["errors"]
    assert snapshot(db) == before


def test_completing_a_task_marks_it_done_and_records_task_completed(client, db):
    task = new_task(client, due_at=PAST)
    assert task["overdue"] is True
    url = f"{BASE}/{task['id']}"
    response = client.post(f"{url}/complete")
    body = response.get_json()
    assert response.status_code == 200 and body["done"] is True
    assert body["completed_at"].endswith("Z") and body["overdue"] is False
    [event] = outbox_events(db, "task.completed")
    assert event["aggregate_version"] == 2 and event["data"]["done"] is True
    before = snapshot(db)
    assert_problem(client.post(f"{url}/complete"), 409)
    assert snapshot(db) == before
    reopened = client.post(f"{url}/reopen").get_json()
    assert reopened["done"] is False and reopened["completed_at"] is None
    assert len(outbox_events(db, "task.reopened")) == 1
    assert_problem(client.post(f"{url}/reopen"), 409)


def test_patching_done_completes_and_reopens_like_the_actions(client, db):
    task = new_task(client)
    url = f"{BASE}/{task['id']}"
    done = client.patch(url, json={"done": True, "notes": "Left a message"}).get_json()
    assert done["done"] is True and done["completed_at"] is not None
    [event] = outbox_events(db, "task.completed")
    assert sorted(event["data"]["changed"]) == ["done", "notes"]
    assert client.patch(url, json={"done": True}).get_json()["version"] == done["version"]
    assert client.patch(url, json={"done": False}).get_json()["completed_at"] is None
    assert len(outbox_events(db, "task.reopened")) == 1


def test_actions_take_no_fields(client, db):
    task = new_task(client)
    before = snapshot(db)
    assert_problem(client.post(f"{BASE}/{task['id']}/complete", json={"when": "now"}), 422)
    assert snapshot(db) == before


def test_deleting_a_task_answers_204_and_records_task_deleted(client, db):
    task = new_task(client)
    assert client.delete(f"{BASE}/{task['id']}").status_code == 204
    assert_problem(client.get(f"{BASE}/{task['id']}"), 404)
    [event] = outbox_events(db, "task.deleted")
    assert event["aggregate_id"] == task["id"] and event["aggregate_version"] == 2


def test_an_owners_overdue_tasks_are_listed_oldest_first(client):
    new_task(client, title="Old", due_at="2020-01-01T09:00:00Z", owner_id=SALES_ID)
    new_task(client, title="Older", due_at="2019-01-01T09:00:00Z", owner_id=SALES_ID)
    new_task(client, title="Later", due_at=FUTURE, owner_id=SALES_ID)
    new_task(client, title="Someone else's", due_at=PAST)
    new_task(client, title="Undated", owner_id=SALES_ID)
    done = new_task(client, title="Done", due_at=PAST, owner_id=SALES_ID)
    client.post(f"{BASE}/{done['id']}/complete")
    assert titles(client, f"owner_id={SALES_ID}&overdue=true") == ["Older", "Old"]
    assert titles(client, f"owner_id={SALES_ID}&overdue=false") == ["Done", "Later", "Undated"]
    items = client.get(f"{BASE}?owner_id={SALES_ID}&overdue=true").get_json()["items"]
    assert all(task["overdue"] for task in items)


def test_an_owners_overdue_list_reads_the_owner_done_due_index(client, db):
    if not db.is_postgres:
        pytest.skip("the query plan checked is PostgreSQL's")
    for index in range(5):
        new_task(client, title=f"T{index}", due_at=PAST, owner_id=SALES_ID)
    args = {"owner_id": SALES_ID, "overdue": True}
    order = tasks.task_sorts(args)["due_at"].column
    statement = tasks.list_statement(args, utcnow()).order_by(order, Task.id).limit(51)
    with db.engine.connect() as connection:
        connection.exec_driver_sql("SET enable_seqscan = off")  # tiny tables: force the choice
        compiled = statement.compile(connection)
        plan = connection.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).all()
    assert "ix_tasks_owner_done_due" in " ".join(row[0] for row in plan)


def test_listing_filters_tasks(client):
    deal = new_deal(client)
    new_task(client, title="A", deal_id=deal["id"], due_at="2026-01-10T00:00:00Z")
    new_task(client, title="B", contact_id=CONTACT, due_at="2026-02-10T00:00:00Z")
    new_task(client, title="C", lead_id=UNKNOWN, done=True)
    assert titles(client, f"deal_id={deal['id']}") == ["A"]
    assert titles(client, f"contact_id={CONTACT}") == ["B"]
    assert titles(client, f"lead_id={UNKNOWN}") == ["C"]
    assert titles(client, "done=true") == ["C"]
    assert titles(client, "done=false") == ["A", "B"]
    assert titles(client, "due_after=2026-02-01T00:00:00Z") == ["B"]
    assert titles(client, "due_before=2026-02-01T00:00:00Z") == ["A"]
    assert titles(client, "sort=-due_at") == ["C", "B", "A"]
    assert titles(client, "sort=created_at") == ["A", "B", "C"]


@pytest.mark.parametrize(
    "query", ["overdue=true", "overdue=false", "due_after=2000-01-01T00:00:00Z"]
)
def test_listing_pages_through_every_task_once(client, query):
    for index in range(7):
        due = f"2020-01-0{index % 3 + 1}T09:00:00Z" if index % 4 else None
        new_task(client, title=f"T{index}", due_at=due)
    expected = set(titles(client, f"{query}&limit=200"))
    seen, cursor = [], None
    while True:
        url = f"{BASE}?{query}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url).get_json()
        seen += [task["title"] for task in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and set(seen) == expected


@pytest.mark.parametrize(
    "query",
    [
        "overdue=maybe",
        "done=perhaps",
        "owner_id=me",
        "due_before=tomorrow",
        "due_before=9999-12-31T23:00:00-05:00",
        "sort=title",
        "colour=red",
        "limit=0",
        "cursor=garbage",
    ],
)
def test_bad_list_parameters_are_422(client, query):
    assert_problem(client.get(f"{BASE}?{query}"), 422)


def test_reads_need_a_token_and_writes_need_sales_or_admin(app, anonymous, client):
    task = new_task(client)
    assert_problem(anonymous.get(BASE), 401)
    for role in ("viewer", "marketing"):
        headers = bearer(app, role, SALES_ID)
        assert anonymous.get(f"{BASE}/{task['id']}", headers=headers).status_code == 200
        assert_problem(anonymous.post(BASE, json={"title": "X"}, headers=headers), 403)
        assert_problem(anonymous.post(f"{BASE}/{task['id']}/complete", headers=headers), 403)
    sales = bearer(app, "sales", SALES_ID)
    mine = anonymous.post(BASE, json={"title": "Mine"}, headers=sales).get_json()
    assert mine["owner_id"] == SALES_ID


def test_an_idempotency_key_creates_one_task(client, db):
    headers = {"Idempotency-Key": "task-1"}
    first = client.post(BASE, json={"title": "Once"}, headers=headers)
    again = client.post(BASE, json={"title": "Once"}, headers=headers)
    assert first.get_json() == again.get_json()
    assert row_counts(db, "tasks")["tasks"] == 1


# --- every route of the blueprint, from the URL map ----------------------------------------

ROUTES = api_routes("tasks")
WRITES = [(m, r) for m, r in ROUTES if m in ("POST", "PATCH", "PUT")]
WITH_ID = [(m, r) for m, r in ROUTES if "<uuid:" in r]


def test_every_task_route_is_covered():
    assert len(WRITES) == 4 and len(WITH_ID) == 5


@pytest.mark.parametrize(("method", "rule"), WRITES)
@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{broken", 400), (b"\xff\xfe", 400), (b'{"surely_not_a_field": 1}', 422)],
)
def test_bad_bodies_are_refused_and_change_nothing(client, db, method, rule, body, status):
    task = new_task(client)
    before = snapshot(db)
    response = client.open(
        path_for(rule, {"task_id": task["id"]}),
        method=method,
        data=body,
        content_type="application/json",
    )
    assert_problem(response, status)
    assert snapshot(db) == before


@pytest.mark.parametrize(("method", "rule"), WITH_ID)
def test_unknown_ids_are_404_and_change_nothing(client, db, method, rule):
    new_task(client)
    before = snapshot(db)
    response = client.open(path_for(rule, unknown_ids(["task_id"])), method=method, json={})
    assert_problem(response, 404)
    assert snapshot(db) == before


@pytest.mark.parametrize(("method", "rule"), WITH_ID)
def test_malformed_ids_are_404(client, method, rule):
    response = client.open(rule.replace("<uuid:", "x").replace(">", "y"), method=method, json={})
    assert_problem(response, 404)


def test_a_task_for_someone_else_carries_no_owner_email(client, db):
    other = "00000000-0000-4000-8000-0000000000ff"
    response = client.post(BASE, json={"title": "Call back", "owner_id": other})
    assert response.status_code == 201
    [event] = outbox_events(db, "task.created")
    assert "owner_email" not in event["data"]
