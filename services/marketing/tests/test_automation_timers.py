"""Automations on the worker's timers and its queue: delayed runs, inactivity, and events
through the real broker (redelivered, poison)."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest

from services.marketing import automations
from services.marketing.app import make_database
from services.marketing.automation_runs import run_due
from services.marketing.automation_triggers import run_inactive
from services.marketing.handlers import handlers
from services.marketing.jobs import timers
from services.marketing.tests.automation_helpers import (
    AUTOMATIONS,
    conditions,
    contact_event,
    handle,
    new_contact,
    new_rule,
    published,
    runs,
)
from shared.deadletters import list_dead_letters, publish_raw
from shared.events import isoformat, utcnow
from shared.testing import make_event, service_worker_on_new_database, wait_until


@pytest.fixture
def settings(app: Any) -> Any:
    return app.extensions["crm.settings"]


def test_a_delayed_run_waits_for_the_timer_and_runs_once(app, client, db, settings):
    rule = new_rule(client, delay_seconds=3600)
    ada = str(uuid.uuid4())
    handle(app, contact_event("contact.created", ada))
    [run] = runs(db, rule["id"])
    assert run.status == "scheduled" and run.ran_at is None
    assert published(db, "email.requested") == []
    now = utcnow()
    assert run_due(db, settings, now=now + timedelta(minutes=30)) == 0
    assert run_due(db, settings, now=now + timedelta(hours=2)) == 1
    assert run_due(db, settings, now=now + timedelta(hours=3)) == 0
    [run] = runs(db, rule["id"])
    assert run.status == "done" and run.ran_at is not None
    [mail] = published(db, "email.requested")
    assert mail["data"]["contact_id"] == ada
    assert {timer.name for timer in timers(settings, db)} >= {"automation-runs"}


def test_a_delayed_run_checks_the_rule_and_the_contact_when_it_runs(app, client, db, settings):
    rule = new_rule(client, delay_seconds=60)
    ada, grace = str(uuid.uuid4()), str(uuid.uuid4())
    handle(app, contact_event("contact.created", ada))
    handle(app, make_event("contact.erased", {"id": ada, "merged_ids": []}, "contacts"))
    assert run_due(db, settings, now=utcnow() + timedelta(minutes=5)) == 1
    handle(app, contact_event("contact.created", grace))
    client.patch(f"{AUTOMATIONS}/{rule['id']}", json={"enabled": False})
    assert run_due(db, settings, now=utcnow() + timedelta(minutes=5)) == 1
    found = {run.contact_id: run for run in runs(db, rule["id"])}
    assert (found[ada].status, found[ada].reason) == (
        "skipped",
        "The contact is unknown or erased.",
    )
    assert found[grace].reason == "The automation is disabled or deleted."
    assert published(db, "email.requested") == []


def test_two_workers_run_each_due_run_once(app, client, db, settings):
    rule = new_rule(client, delay_seconds=1, action={"type": "add_tag", "tags": ["x"]})
    for _ in range(30):
        handle(app, contact_event("contact.created", str(uuid.uuid4())))
    engines = [make_database(settings) for _ in range(2)]
    counts: list[int] = []
    barrier = threading.Barrier(2)
    later = utcnow() + timedelta(minutes=1)

    def work(database: Any) -> None:
        barrier.wait()
        counts.append(sum(run_due(database, settings, now=later, limit=5) for _ in range(10)))

    threads = [threading.Thread(target=work, args=(database,)) for database in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for database in engines:
        database.dispose()
    assert sum(counts) == 30
    assert {run.status for run in runs(db, rule["id"])} == {"done"}
    assert len(published(db, "contact.tag_requested")) == 30


def test_an_inactive_customer_fires_once_per_stretch_of_inactivity(app, client, db, settings):
    long_ago = isoformat(utcnow() - timedelta(days=100))
    recently = isoformat(utcnow() - timedelta(days=10))
    customer = {"lifecycle_stage": "customer"}
    idle = new_contact(app, last_activity_at=long_ago, **customer)
    yesterday = isoformat(utcnow() - timedelta(days=1))
    new_contact(app, last_activity_at=yesterday, **customer)  # active
    new_contact(app, last_activity_at=long_ago, lifecycle_stage="lead")  # not a customer
    never = new_contact(app, last_activity_at=None, created_at=long_ago, **customer)
    gone = new_contact(app, last_activity_at=long_ago, **customer)
    handle(app, make_event("contact.erased", {"id": gone, "merged_ids": []}, "contacts"))
    stage = ("contact.lifecycle_stage", "eq", "customer")
    trigger = {
        "event_type": "contact.inactive",
        "inactive_days": 90,
        "conditions": conditions(stage),
    }
    rule = new_rule(client, trigger=trigger, action={"type": "add_tag", "tags": ["lapsed"]})

    assert run_inactive(db, settings) == 2
    assert run_inactive(db, settings) == 0  # the same inactivity fires once
    fired = {run.contact_id: run for run in runs(db, rule["id"])}
    assert set(fired) == {idle, never}
    assert fired[idle].trigger_key.startswith(f"inactive:{idle}:")
    assert fired[idle].event_type == "contact.inactive"
    assert len(published(db, "contact.tag_requested")) == 2

    handle(app, contact_event("contact.updated", idle, 2, last_activity_at=recently, **customer))
    assert run_inactive(db, settings) == 0  # active again
    later = utcnow() + timedelta(days=85)
    assert run_inactive(db, settings, now=later) == 1  # inactive again: fires again
    assert run_inactive(db, settings, now=later) == 0
    assert len(runs(db, rule["id"])) == 3


def test_two_workers_scanning_at_once_fire_each_inactive_contact_once(app, client, db, settings):
    long_ago = isoformat(utcnow() - timedelta(days=200))
    idle = {new_contact(app, last_activity_at=long_ago) for _ in range(20)}
    rule = new_rule(client, trigger={"event_type": "contact.inactive"})
    engines = [make_database(settings) for _ in range(2)]
    counts: list[int] = []
    barrier = threading.Barrier(2)

    def work(database: Any) -> None:
        barrier.wait()
        counts.append(sum(run_inactive(database, settings, limit=3) for _ in range(10)))

    threads = [threading.Thread(target=work, args=(database,)) for database in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for database in engines:
        database.dispose()
    # A tick that finds the rule being scanned skips it: the next one goes on.
    assert sum(counts) + run_inactive(db, settings) == 20
    assert sorted(run.contact_id for run in runs(db, rule["id"])) == sorted(idle)
    assert len(published(db, "email.requested")) == 20


def test_a_disabled_inactivity_rule_fires_nothing(app, client, db, settings):
    new_contact(app, last_activity_at=isoformat(utcnow() - timedelta(days=400)))
    new_rule(client, trigger={"event_type": "contact.inactive"}, enabled=False)
    assert run_inactive(db, settings) == 0
    assert runs(db) == []


@pytest.fixture
def running_worker(make_settings, database_url):
    settings = make_settings("marketing", database_url=database_url)
    with service_worker_on_new_database(settings, make_database, handlers) as running:
        yield running


def test_through_the_broker_a_redelivered_event_fires_once_and_poison_is_dead_lettered(
    running_worker,
):
    settings, db = running_worker
    with db.session() as session:
        rule = automations.create_rule(
            session,
            {
                "name": "Converted",
                "trigger": {"event_type": "lead.converted"},
                "actions": [{"type": "create_task", "title": "Onboard"}],
                "enabled": True,
            },
        )
        rule_id = rule.id
    poison = make_event("lead.converted", {"contact_id": 42}, "sales")
    publish_raw(settings, "lead.converted", poison.to_json())
    good = make_event("lead.converted", {"contact_id": str(uuid.uuid4())}, "sales")
    publish_raw(settings, "lead.converted", good.to_json())
    publish_raw(settings, "lead.converted", good.to_json())
    after = make_event("lead.converted", {"contact_id": str(uuid.uuid4())}, "sales")
    publish_raw(settings, "lead.converted", after.to_json())
    wait_until(lambda: len(runs(db, rule_id)) == 2, 15, "for the two good events")
    wait_until(lambda: len(list_dead_letters(settings)) == 1, 15, "for the dead letter")
    [letter] = list_dead_letters(settings)
    assert letter.reason == "permanent" and json.loads(letter.body)["id"] == poison.id
    assert sorted(run.trigger_key for run in runs(db, rule_id)) == sorted([good.id, after.id])
    # The contacts are not in the replica yet: the runs say so (a delay would wait for them).
    assert {run.status for run in runs(db, rule_id)} == {"skipped"}
