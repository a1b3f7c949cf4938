"""`task.requested` (marketing's automations ask for a task): made as the API makes it,
under the id asked for, once; a request the API would refuse is dead-lettered."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from services.sales.app import make_database
from services.sales.handlers import handlers
from services.sales.models import Task
from shared.bus import PermanentError
from shared.deadletters import list_dead_letters, publish_raw
from shared.testing import consuming_worker, handle_event, make_event, outbox_events, wait_until

OWNER = "00000000-0000-4000-8000-0000000000a1"


@pytest.fixture
def service_db(make_settings, database_url):
    settings = make_settings("sales", database_url=database_url)
    db = make_database(settings)
    db.create_all()
    yield settings, db
    db.dispose()


def request(**fields) -> object:
    data = {
        "task_id": str(uuid.uuid4()),
        "title": "Call about the SLA breach",
        "contact_id": str(uuid.uuid4()),
        "owner_id": OWNER,
        "due_at": "2026-12-03T09:00:00Z",
        "automation_id": str(uuid.uuid4()),  # not a task field: ignored
        **fields,
    }
    return make_event("task.requested", data, "marketing", aggregate_id=data["contact_id"])


def tasks_in(db) -> list[Task]:
    with db.session() as session:
        return list(session.scalars(sa.select(Task)))


def test_a_requested_task_is_made_as_the_api_makes_it(service_db):
    _, db = service_db
    asked = request()
    handle_event(db, handlers(), asked)
    [task] = tasks_in(db)
    data = asked.data
    assert (task.id, task.title, task.contact_id, task.owner_id) == (
        data["task_id"],
        data["title"],
        data["contact_id"],
        OWNER,
    )
    assert task.due_at is not None and task.done is False and task.version == 1
    [(_, created)] = outbox_events(db, "task.created")
    assert created["id"] == data["task_id"] and created["due_at"] == "2026-12-03T09:00:00Z"


def test_a_request_asked_again_makes_one_task(service_db):
    _, db = service_db
    asked = request()
    handle_event(db, handlers(), asked)
    handle_event(db, handlers(), asked)
    again = make_event("task.requested", dict(asked.data), "marketing")  # a new event, same id
    handle_event(db, handlers(), again)
    assert len(tasks_in(db)) == 1 and len(outbox_events(db, "task.created")) == 1


def test_a_redacted_request_makes_nothing(service_db):
    _, db = service_db
    handle_event(db, handlers(), make_event("task.requested", {"redacted": True}, "marketing"))
    assert tasks_in(db) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"task_id": None},
        {"task_id": "not-an-id"},
        {"title": None},
        {"title": ""},
        {"due_at": "tomorrow"},
        {"contact_id": 42},
        {"deal_id": str(uuid.uuid4())},  # no such deal
    ],
)
def test_a_request_the_api_would_refuse_is_a_permanent_failure(service_db, fields):
    _, db = service_db
    with pytest.raises(PermanentError):
        handle_event(db, handlers(), request(**fields))
    assert tasks_in(db) == []


def test_through_the_broker_a_redelivery_makes_one_task_and_poison_dead_letters(service_db):
    settings, db = service_db
    with consuming_worker(settings, db, handlers()):
        poison = request(title=None)
        publish_raw(settings, "task.requested", poison.to_json())
        asked = request()
        publish_raw(settings, "task.requested", asked.to_json())
        publish_raw(settings, "task.requested", asked.to_json())
        last = request()
        publish_raw(settings, "task.requested", last.to_json())
        wait_until(lambda: len(tasks_in(db)) == 2, 15, "for the two tasks")
        wait_until(lambda: len(list_dead_letters(settings)) == 1, 15, "for the dead letter")
    [letter] = list_dead_letters(settings)
    assert letter.reason == "permanent"
    assert sorted(task.id for task in tasks_in(db)) == sorted(
        [asked.data["task_id"], last.data["task_id"]]
    )
