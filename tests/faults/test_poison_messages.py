"""Poison messages of every kind, published straight to the events exchange.

The sales worker consumes `task.requested` (marketing's automations ask it for tasks).
Whatever arrives under that routing key, the worker never stops: each message it can
never apply lands in `sales.events.dlq` with the reason in its headers, an unknown event
type is acknowledged and ignored (ARCHITECTURE: "a consumer ignores unknown types"), and
good events after the poison are applied. `crm dlq list` shows the dead letters without
taking them, and `crm dlq replay` delivers them again once the cause is fixed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from shared.deadletters import publish_raw
from shared.events import Envelope
from shared.testing import make_event
from tests.crm_run import eventually
from tests.faults.single_worker import (
    ServiceProcesses,
    crm,
    publish_events,
    queue_depth,
    service_processes,
)

pytestmark = pytest.mark.faults

SETTLE_SECONDS = 60
DROP = object()  # a field left out of the envelope


def envelope(marker: str, **changes: object) -> bytes:
    """A task.requested envelope (valid unless `changes` spoil it), tagged by `marker`."""
    good = make_event("task.requested", {"task_id": str(uuid.uuid4()), "title": marker})
    raw = {**good.to_dict(), "correlation_id": marker, **changes}
    return json.dumps({key: value for key, value in raw.items() if value is not DROP}).encode()


# marker -> (body, reason header, a piece of the error header)
POISON = {
    "not-json": (b"not-json: just some words", "malformed", "not JSON"),
    "bad-utf8": (b'{"title": "bad-utf8 \xff\xfe"}', "malformed", "not JSON"),
    "not-an-object": (b'["not-an-object"]', "malformed", "not a JSON object"),
    "deep-json": (b'{"deep-json": ' + b"[" * 100_000, "malformed", "recursion"),
    "missing-fields": (envelope("missing-fields", id=DROP, source=DROP), "malformed", "id"),
    "wrong-types": (envelope("wrong-types", version="1", data=[1]), "malformed", "version"),
    "bad-type-name": (envelope("bad-type-name", type="Task Requested!"), "malformed", "type"),
}


def task_requested(title: str, **data: object) -> Envelope:
    return make_event(
        "task.requested", {"task_id": str(uuid.uuid4()), "title": title, **data}, "marketing"
    )


@pytest.fixture
def sales(tmp_path: Path, amqp_url: str, amqp_prefix: str) -> Iterator[ServiceProcesses]:
    with service_processes("sales", tmp_path / "var", amqp_url, amqp_prefix) as service:
        service.start_worker()
        yield service


def publish_raw_bodies(settings, bodies: list[bytes]) -> None:
    """Publish bodies as they are (no envelope checks) under the routing key task.requested."""
    for body in bodies:
        publish_raw(settings, "task.requested", body)


def tasks_with(db, task_id: str) -> int:
    with db.engine.connect() as connection:
        query = sa.text("SELECT count(*) FROM tasks WHERE id = :id")
        return connection.execute(query, {"id": task_id}).scalar_one()


def dead_letters(sales: ServiceProcesses) -> list[dict]:
    """`crm dlq list sales`, run as a real command: one JSON object per dead letter."""
    listed = crm(sales.env, "dlq", "list", "sales")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]


def test_each_poison_message_lands_in_the_dlq_with_its_reason_and_consuming_goes_on(
    sales: ServiceProcesses,
) -> None:
    settings = sales.settings()
    db = sales.database()
    unknown_type = envelope("unknown-type", type="task.exploded")
    bad_data = task_requested("")  # a task needs a title: the handler refuses the event
    good = task_requested("good after the poison")
    try:
        publish_raw_bodies(settings, [body for body, _, _ in POISON.values()] + [unknown_type])
        publish_events(settings, [bad_data, good])

        eventually(
            lambda: tasks_with(db, good.data["task_id"]) == 1, timeout=SETTLE_SECONDS, what="good"
        )
        expected = len(POISON) + 1  # and the handler's refusal; the unknown type is ignored
        dlq = settings.dead_letter_queue
        eventually(
            lambda: queue_depth(settings, dlq) == expected, timeout=SETTLE_SECONDS, what="the DLQ"
        )

        letters = dead_letters(sales)
        assert len(letters) == expected
        for marker, (_body, reason, error) in POISON.items():
            found = [letter for letter in letters if marker in letter["body"]]
            assert len(found) == 1, (marker, letters)
            [letter] = found
            assert letter["reason"] == reason, (marker, letter)
            assert error in letter["error"], (marker, letter)
        [refused] = [letter for letter in letters if bad_data.id in letter["body"]]
        assert refused["reason"] == "permanent" and "title" in refused["error"]
        assert not [letter for letter in letters if "unknown-type" in letter["body"]]
        assert queue_depth(settings, dlq) == expected  # listing took nothing away
        assert queue_depth(settings, settings.queue) == 0  # everything was acknowledged
        assert tasks_with(db, bad_data.data["task_id"]) == 0
        assert sales.processes["worker"].poll() is None
    finally:
        db.dispose()


def test_replay_after_fixing_the_cause_applies_the_dead_letter_once(
    sales: ServiceProcesses,
) -> None:
    from shared.auth import Principal, issue_service_token

    settings = sales.settings()
    db = sales.database()
    deal_id = str(uuid.uuid4())
    orphan = task_requested("call about the deal", deal_id=deal_id)  # the deal is not there
    hopeless = POISON["not-json"][0]
    try:
        publish_events(settings, [orphan])
        publish_raw_bodies(settings, [hopeless])
        dlq = settings.dead_letter_queue
        eventually(
            lambda: queue_depth(settings, dlq) == 2, timeout=SETTLE_SECONDS, what="both dead"
        )
        [letter] = [letter for letter in dead_letters(sales) if orphan.id in letter["body"]]
        assert letter["reason"] == "permanent" and "No deal with this id" in letter["error"]

        # The fix: the deal the task is about now exists (made through the sales api).
        api = sales.start_api()
        # Straight to the service: the token the gateway would forward.
        token = issue_service_token(settings, Principal(subject=str(uuid.uuid4()), role="admin"))
        made = requests.post(
            f"{api}/api/v1/deals",
            json={"id": deal_id, "name": "The deal the task waited for"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert made.status_code == 201, made.text

        replayed = crm(sales.env, "dlq", "replay", "sales")
        assert replayed.returncode == 0, replayed.stderr
        assert "2 dead letters replayed" in replayed.stdout

        task_id = orphan.data["task_id"]
        eventually(
            lambda: tasks_with(db, task_id) == 1, timeout=SETTLE_SECONDS, what="the replayed task"
        )
        # What no fix can mend goes back to the DLQ (once: no endless loop).
        eventually(
            lambda: queue_depth(settings, dlq) == 1, timeout=SETTLE_SECONDS, what="hopeless back"
        )
        [back] = dead_letters(sales)
        assert back["reason"] == "malformed" and "not-json" in back["body"]

        with db.engine.connect() as connection:
            query = sa.text("SELECT count(*) FROM tasks WHERE deal_id = :deal")
            assert connection.execute(query, {"deal": deal_id}).scalar_one() == 1
    finally:
        db.dispose()
