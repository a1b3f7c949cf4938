"""The reminders API: lists with filters and cursors, one reminder, DELETE cancels."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from services.notifications import reminders
from services.notifications.tests.conftest import token_for
from services.notifications.tests.test_reminders import DUE, OTHER_OWNER, OWNER, task_event
from shared.events import isoformat
from shared.testing import handle_event


@pytest.fixture
def settings(app: Any) -> Any:
    return app.extensions["crm.settings"]


def new_task(db: Any, settings: Any, days: int = 0, owner: str = OWNER) -> str:
    task_id = str(uuid.uuid4())
    due = isoformat(DUE + timedelta(days=days))
    email = "rep@example.com"
    event = task_event("task.created", task_id, 1, due_at=due, owner_id=owner, owner_email=email)
    handle_event(db, reminders.handlers(settings), event)
    return task_id


def reminder_id(client: Any, task_id: str) -> str:
    [item] = client.get(f"/api/v1/reminders?task_id={task_id}").get_json()["items"]
    return item["id"]


def client_as(app: Any, role: str, subject: str = OWNER) -> Any:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app, role, subject)}"
    return client


def test_reminders_are_listed_by_due_date_and_paged(client, db, settings):
    tasks = [new_task(db, settings, days) for days in (2, 0, 1)]
    first = client.get("/api/v1/reminders?limit=2").get_json()
    second = client.get(f"/api/v1/reminders?limit=2&cursor={first['next_cursor']}").get_json()
    items = first["items"] + second["items"]
    assert [item["task_id"] for item in items] == [tasks[1], tasks[2], tasks[0]]
    assert second["next_cursor"] is None
    assert items[0]["due_at"] == "2030-03-04T09:30:00Z" and items[0]["status"] == "scheduled"
    assert set(items[0]) >= {"id", "owner_id", "recipient", "title", "fired_at", "message_id"}
    newest = client.get("/api/v1/reminders?sort=-due_at").get_json()["items"]
    assert [item["task_id"] for item in newest] == [tasks[0], tasks[2], tasks[1]]


def test_reminders_are_filtered_by_owner_status_and_task(client, db, settings):
    mine, theirs = new_task(db, settings), new_task(db, settings, 3, owner=OTHER_OWNER)
    reminders.fire_due(db, settings, DUE)
    by_owner = client.get(f"/api/v1/reminders?owner_id={OTHER_OWNER}").get_json()["items"]
    assert [item["task_id"] for item in by_owner] == [theirs]
    sent = client.get("/api/v1/reminders?status=sent").get_json()["items"]
    assert [(item["task_id"], item["fired_at"]) for item in sent] == [
        (mine, "2030-03-04T09:30:00Z")
    ]
    assert sent[0]["message_id"] is not None
    by_task = client.get(f"/api/v1/reminders?task_id={mine}").get_json()["items"]
    assert [item["task_id"] for item in by_task] == [mine]


def test_one_reminder_is_read_by_id(client, db, settings):
    task_id = new_task(db, settings)
    ident = reminder_id(client, task_id)
    response = client.get(f"/api/v1/reminders/{ident}")
    assert response.status_code == 200 and response.get_json()["task_id"] == task_id
    assert client.get(f"/api/v1/reminders/{uuid.uuid4()}").status_code == 404
    assert client.get("/api/v1/reminders/not-a-uuid").status_code == 404


def test_deleting_a_reminder_cancels_it_and_it_never_fires(client, db, settings):
    ident = reminder_id(client, new_task(db, settings))
    assert client.delete(f"/api/v1/reminders/{ident}").status_code == 204
    assert client.get(f"/api/v1/reminders/{ident}").get_json()["status"] == "cancelled"
    assert client.delete(f"/api/v1/reminders/{ident}").status_code == 204  # again: harmless
    assert reminders.fire_due(db, settings, DUE + timedelta(days=1)) == 0


def test_a_sent_reminder_cannot_be_cancelled(client, db, settings):
    ident = reminder_id(client, new_task(db, settings))
    reminders.fire_due(db, settings, DUE)
    response = client.delete(f"/api/v1/reminders/{ident}")
    assert response.status_code == 409
    assert client.get(f"/api/v1/reminders/{ident}").get_json()["status"] == "sent"
    assert client.delete(f"/api/v1/reminders/{uuid.uuid4()}").status_code == 404


@pytest.mark.parametrize(
    ("role", "subject", "status"),
    [
        ("sales", OWNER, 204),
        ("sales", OTHER_OWNER, 404),  # owner scope: another rep's reminder is not theirs
        ("support", OWNER, 204),  # the owner may cancel their own
        ("support", OTHER_OWNER, 403),
        ("marketing", OTHER_OWNER, 403),
        ("viewer", OWNER, 403),  # viewers only read
    ],
)
def test_who_may_cancel_a_reminder(app, client, db, settings, role, subject, status):
    ident = reminder_id(client, new_task(db, settings))
    caller = client_as(app, role, subject)
    assert caller.get(f"/api/v1/reminders/{ident}").status_code == (404 if status == 404 else 200)
    assert caller.delete(f"/api/v1/reminders/{ident}").status_code == status
    expected = "cancelled" if status == 204 else "scheduled"
    assert client.get(f"/api/v1/reminders/{ident}").get_json()["status"] == expected


def test_without_a_token_it_is_401(anonymous):
    assert anonymous.get("/api/v1/reminders").status_code == 401
    assert anonymous.delete(f"/api/v1/reminders/{uuid.uuid4()}").status_code == 401


@pytest.mark.parametrize(
    "query",
    [
        "status=lost",
        "owner_id=someone",
        "task_id=42",
        "limit=0",
        "limit=201",
        "cursor=garbage",
        "sort=title",
        "colour=blue",
        "status=sent&status=scheduled",
        "owner_id=%00",
    ],
)
def test_bad_query_parameters_are_422(client, db, settings, query):
    new_task(db, settings)
    response = client.get(f"/api/v1/reminders?{query}")
    assert response.status_code == 422, response.get_json()
