"""Reminders from task events: scheduled, moved, cancelled, fired once at the due time (by
several workers too), never after completion; stale and bad events; the real broker."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from services.notifications import reminders
from services.notifications.app import make_database
from services.notifications.models import Base, Message, Reminder, UserAddress
from shared.bus import PermanentError
from shared.db import Database
from shared.deadletters import publish_raw
from shared.events import isoformat, utcnow
from shared.testing import consuming_worker, handle_event, make_event, outbox_events, wait_until
from shared.worker import Timer

OWNER = "00000000-0000-4000-8000-0000000000a1"
OTHER_OWNER = "00000000-0000-4000-8000-0000000000a2"
DUE = datetime(2030, 3, 4, 9, 30, tzinfo=UTC)


@pytest.fixture
def settings(app: Any) -> Any:
    return app.extensions["crm.settings"]


def task_event(event_type: str, task_id: str, version: int, **fields: Any) -> Any:
    """A task event as the sales service writes it (the task as its API shows it)."""
    data = {
        "id": task_id,
        "task_id": task_id,
        "title": "Call Ada back",
        "due_at": isoformat(DUE),
        "contact_id": None,
        "deal_id": None,
        "owner_id": OWNER,
        "done": event_type == "task.completed",
        **fields,
    }
    return make_event(event_type, data, "sales", aggregate_id=task_id, aggregate_version=version)


def apply(db: Database, settings: Any, event: Any) -> None:
    handle_event(db, reminders.handlers(settings), event)


def new_task(db: Database, settings: Any, **fields: Any) -> str:
    task_id = str(uuid.uuid4())
    fields.setdefault("owner_email", "rep@example.com")
    apply(db, settings, task_event("task.created", task_id, 1, **fields))
    return task_id


def reminder_of(db: Database, task_id: str) -> Reminder | None:
    with db.session() as session:
        return session.scalars(sa.select(Reminder).where(Reminder.task_id == task_id)).first()


def messages(db: Database) -> list[Message]:
    with db.session() as session:
        return list(session.scalars(sa.select(Message).order_by(Message.created_at)))


def due_events(db: Database) -> list[dict[str, Any]]:
    return [data for _, data in outbox_events(db, "task.reminder_due")]


def at(moment: datetime | None) -> datetime | None:
    return reminders.as_utc(moment)


# --- scheduling ----------------------------------------------------------------------------


def test_a_task_with_a_due_date_gets_a_scheduled_reminder(db, settings):
    task_id = new_task(db, settings)
    reminder = reminder_of(db, task_id)
    assert (reminder.status, at(reminder.due_at), reminder.title) == (
        "scheduled",
        DUE,
        "Call Ada back",
    )
    assert (reminder.owner_id, reminder.recipient) == (OWNER, "rep@example.com")


def test_a_task_without_a_due_date_or_done_gets_none(db, settings):
    assert reminder_of(db, new_task(db, settings, due_at=None)) is None
    assert reminder_of(db, new_task(db, settings, done=True)) is None


def test_a_reminder_fires_at_its_due_time_once(db, settings):
    task_id = new_task(db, settings)
    assert reminders.fire_due(db, settings, DUE - timedelta(seconds=1)) == 0
    assert reminders.fire_due(db, settings, DUE) == 1
    assert reminders.fire_due(db, settings, DUE + timedelta(hours=1)) == 0

    reminder = reminder_of(db, task_id)
    assert (reminder.status, at(reminder.fired_at)) == ("sent", DUE)
    [message] = messages(db)
    assert message.id == reminder.message_id == reminders.message_id_for(reminder)
    assert uuid.UUID(message.id).version == 5
    assert (message.to_address, message.status, message.category) == (
        "rep@example.com",
        "queued",
        "transactional",
    )
    assert (
        message.subject == "Reminder: Call Ada back" and "2030-03-04 09:30 UTC" in message.body_text
    )
    [event] = due_events(db)
    assert event["task_id"] == task_id and event["owner_id"] == OWNER
    assert event["title"] == "Call Ada back" and event["due_at"] == "2030-03-04T09:30:00Z"
    assert event["message_id"] == message.id


def test_the_email_escapes_the_title_in_html(db, settings):
    new_task(db, settings, title="<b>Lunch</b> & call")
    reminders.fire_due(db, settings, DUE)
    [message] = messages(db)
    assert "&lt;b&gt;Lunch&lt;/b&gt; &amp; call" in message.body_html
    assert message.subject == "Reminder: <b>Lunch</b> & call"


def test_without_a_recipient_only_the_event_goes_out(db, settings, caplog):
    task_id = new_task(db, settings, owner_email=None)
    with caplog.at_level("INFO", logger="services.notifications.reminders"):
        assert reminders.fire_due(db, settings, DUE) == 1
    assert messages(db) == [] and reminder_of(db, task_id).message_id is None
    assert [event["task_id"] for event in due_events(db)] == [task_id]
    assert "no recipient" in caplog.text


def test_without_an_email_in_the_task_the_owners_address_comes_from_the_staff_replica(db, settings):
    with db.session() as session:
        session.add(UserAddress(user_id=OWNER, email="owner@example.com", name="O", version=1))
    task_id = new_task(db, settings, owner_email=None)
    assert reminders.fire_due(db, settings, DUE) == 1
    [message] = messages(db)
    assert message.to_address == "owner@example.com"
    assert reminder_of(db, task_id).recipient == "owner@example.com"


def test_an_unusable_owner_email_is_no_recipient(db, settings):
    task_id = new_task(db, settings, owner_email="not an address")
    assert reminder_of(db, task_id).recipient is None


def test_an_email_the_queue_refuses_does_not_hold_back_the_others(db, settings):
    bad, good = new_task(db, settings), new_task(db, settings, owner_email="ok@example.com")
    with db.session() as session:  # what an older version may have stored
        session.scalars(sa.select(Reminder).where(Reminder.task_id == bad)).one().recipient = "x"
    assert reminders.fire_due(db, settings, DUE) == 2
    assert [message.to_address for message in messages(db)] == ["ok@example.com"]
    assert sorted(event["task_id"] for event in due_events(db)) == sorted([bad, good])
    assert reminder_of(db, bad).status == "sent" and reminder_of(db, bad).message_id is None


# --- following the task --------------------------------------------------------------------


@pytest.mark.parametrize("closing", ["task.completed", "task.deleted"])
def test_a_completed_or_deleted_task_is_not_reminded(db, settings, closing):
    task_id = new_task(db, settings)
    apply(db, settings, task_event(closing, task_id, 2))
    assert reminder_of(db, task_id).status == "cancelled"
    assert reminders.fire_due(db, settings, DUE + timedelta(days=1)) == 0
    assert messages(db) == [] and due_events(db) == []


def test_a_new_due_date_moves_the_reminder(db, settings):
    task_id = new_task(db, settings)
    later = DUE + timedelta(days=1)
    changes = {"due_at": isoformat(later), "title": "Call Ada (moved)", "changed": ["due_at"]}
    apply(db, settings, task_event("task.updated", task_id, 2, **changes))
    assert reminders.fire_due(db, settings, DUE) == 0
    assert reminders.fire_due(db, settings, later) == 1
    assert messages(db)[0].subject == "Reminder: Call Ada (moved)"


def test_a_cleared_due_date_cancels_and_a_new_one_schedules(db, settings):
    task_id = new_task(db, settings, due_at=None)
    apply(db, settings, task_event("task.updated", task_id, 2))
    assert reminder_of(db, task_id).status == "scheduled"
    apply(db, settings, task_event("task.updated", task_id, 3, due_at=None))
    assert reminder_of(db, task_id).status == "cancelled"


def test_a_new_owner_without_an_email_gets_no_email_meant_for_the_old_one(db, settings):
    task_id = new_task(db, settings)
    apply(db, settings, task_event("task.updated", task_id, 2, owner_id=OTHER_OWNER))
    reminder = reminder_of(db, task_id)
    assert (reminder.owner_id, reminder.recipient) == (OTHER_OWNER, None)
    apply(
        db,
        settings,
        task_event("task.updated", task_id, 3, owner_id=OTHER_OWNER, owner_email="b@example.com"),
    )
    assert reminder_of(db, task_id).recipient == "b@example.com"


def test_a_sent_reminder_is_not_sent_again_for_other_changes(db, settings):
    task_id = new_task(db, settings)
    reminders.fire_due(db, settings, DUE)
    apply(db, settings, task_event("task.updated", task_id, 2, title="Call Ada, again"))
    assert reminder_of(db, task_id).status == "sent"
    assert reminders.fire_due(db, settings, DUE + timedelta(days=2)) == 0


def test_a_sent_reminder_whose_task_is_pushed_out_is_scheduled_again(db, settings):
    past = utcnow() - timedelta(hours=1)
    task_id = new_task(db, settings, due_at=isoformat(past))
    assert reminders.fire_due(db, settings) == 1
    later = utcnow() + timedelta(days=1)
    apply(db, settings, task_event("task.updated", task_id, 2, due_at=isoformat(later)))
    reminder = reminder_of(db, task_id)
    assert (reminder.status, at(reminder.due_at), reminder.fired_at) == ("scheduled", later, None)
    assert reminders.fire_due(db, settings, later) == 1
    assert len({message.id for message in messages(db)}) == 2


def test_a_reopened_task_due_later_is_reminded_again(db, settings):
    task_id = new_task(db, settings)
    reminders.fire_due(db, settings, DUE)
    apply(db, settings, task_event("task.completed", task_id, 2))
    assert reminder_of(db, task_id).status == "sent"  # sent stays sent
    later = DUE + timedelta(days=7)
    apply(db, settings, task_event("task.reopened", task_id, 3, due_at=isoformat(later)))
    reminder = reminder_of(db, task_id)
    assert (reminder.status, reminder.fired_at) == ("scheduled", None)
    assert reminders.fire_due(db, settings, later) == 1
    first, second = messages(db)
    assert first.id != second.id  # a new due time, a new email


def test_a_reopened_task_already_past_due_stays_quiet(db, settings):
    task_id = new_task(db, settings, due_at=isoformat(utcnow() - timedelta(hours=1)))
    apply(db, settings, task_event("task.completed", task_id, 2, due_at=None))
    apply(
        db,
        settings,
        task_event("task.reopened", task_id, 3, due_at=isoformat(utcnow() - timedelta(minutes=1))),
    )
    assert reminder_of(db, task_id).status == "cancelled"


# --- duplicates, order and bad events ------------------------------------------------------


def test_a_completion_overtaking_the_creation_still_prevents_the_reminder(db, settings):
    task_id = str(uuid.uuid4())
    apply(db, settings, task_event("task.completed", task_id, 2))
    apply(db, settings, task_event("task.created", task_id, 1, owner_email="rep@example.com"))
    assert reminder_of(db, task_id).status == "cancelled"
    assert reminders.fire_due(db, settings, DUE) == 0


def test_stale_and_repeated_events_are_ignored(db, settings):
    task_id = new_task(db, settings)
    latest = isoformat(DUE + timedelta(days=2))
    apply(db, settings, task_event("task.updated", task_id, 3, due_at=latest))
    apply(db, settings, task_event("task.updated", task_id, 2, due_at=isoformat(DUE)))
    apply(db, settings, task_event("task.created", task_id, 1))
    reminder = reminder_of(db, task_id)
    assert (at(reminder.due_at), reminder.version) == (DUE + timedelta(days=2), 3)
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Reminder)) == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"due_at": "next tuesday"},
        {"due_at": 1700000000},
        {"title": ["a list"]},
        {"owner_id": "someone"},
    ],
)
def test_events_that_can_never_apply_are_permanent_failures(db, settings, fields):
    event = task_event("task.created", str(uuid.uuid4()), 1, **fields)
    with pytest.raises(PermanentError):
        apply(db, settings, event)


def test_an_event_naming_no_task_is_a_permanent_failure(db, settings):
    data = {"title": "Call", "due_at": isoformat(DUE)}
    for event in (
        make_event("task.created", data, aggregate_id="not-a-uuid"),
        make_event("task.created", {**data, "id": "42"}),
        make_event("task.created", {**data, "task_id": 42}),
    ):
        with pytest.raises(PermanentError):
            apply(db, settings, event)
    assert reminders.fire_due(db, settings, DUE) == 0


# --- several workers -----------------------------------------------------------------------


def _fire_in_thread(url, settings, now, barrier, results, errors) -> None:
    database = Database("notifications", url, Base.metadata)
    try:
        barrier.wait(timeout=30)
        results.append(reminders.fire_due(database, settings, now, batch=7))
    except Exception as error:  # reported by the test
        errors.append(error)
    finally:
        database.dispose()


def test_concurrent_workers_fire_each_reminder_exactly_once(db, settings):
    tasks = [new_task(db, settings, owner_email=f"rep{n}@example.com") for n in range(60)]
    url = db.engine.url.render_as_string(hide_password=False)
    barrier, results, errors = threading.Barrier(4), [], []
    threads = [
        threading.Thread(
            target=_fire_in_thread, args=(url, settings, DUE, barrier, results, errors)
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and sum(results) == 60
    fired = Counter(event["task_id"] for event in due_events(db))
    assert set(fired) == set(tasks) and set(fired.values()) == {1}
    assert len(messages(db)) == 60
    assert reminders.fire_due(db, settings, DUE) == 0


def test_a_firing_skips_a_reminder_another_transaction_holds(db, settings):
    if not db.is_postgres:
        pytest.skip("row locks are PostgreSQL's; SQLite runs one writer at a time")
    held, free = new_task(db, settings), new_task(db, settings)
    with db.engine.connect() as connection, connection.begin():
        connection.execute(sa.select(Reminder.id).where(Reminder.task_id == held).with_for_update())
        assert reminders.fire_due(db, settings, DUE) == 1  # did not wait for the lock
        assert [event["task_id"] for event in due_events(db)] == [free]
    assert reminders.fire_due(db, settings, DUE) == 1


# --- through the real broker ---------------------------------------------------------------


@pytest.fixture
def running_worker(make_settings, database_url):
    settings = make_settings("notifications", database_url=database_url)
    database = make_database(settings)
    database.create_all()
    timer = Timer(0.1, reminders.reminder_timer(settings, database).action, "reminders")
    with consuming_worker(settings, database, reminders.handlers(settings), timers=[timer]):
        yield settings, database
    database.dispose()


def test_a_task_from_the_broker_is_reminded_when_due_and_a_done_one_is_not(running_worker):
    settings, database = running_worker
    soon = utcnow() + timedelta(seconds=1.5)
    done, due = str(uuid.uuid4()), str(uuid.uuid4())
    for task_id in (done, due):
        created = task_event(
            "task.created", task_id, 1, due_at=isoformat(soon), owner_email="rep@example.com"
        )
        publish_raw(settings, "task.created", created.to_json())
    publish_raw(settings, "task.completed", task_event("task.completed", done, 2).to_json())
    wait_until(lambda: reminder_of(database, done) is not None, 15, "for the reminders")
    wait_until(lambda: reminder_of(database, done).status == "cancelled", 15, "for the completion")
    assert reminder_of(database, due).status == "scheduled" and utcnow() < soon
    wait_until(lambda: len(due_events(database)) == 1, 15, "for the reminder to fire")
    assert utcnow() >= soon
    assert [event["task_id"] for event in due_events(database)] == [due]
    assert [message.to_address for message in messages(database)] == ["rep@example.com"]
