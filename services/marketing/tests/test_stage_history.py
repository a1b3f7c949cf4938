"""The lifecycle stage history: one row per contact version, whatever the order or repeats;
merges and erasures end a contact; malformed events refused; and one run through the broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from services.marketing import stage_history
from services.marketing.app import make_database
from services.marketing.handlers import handlers
from services.marketing.models import ContactStage
from shared.bus import PermanentError
from shared.deadletters import list_dead_letters, publish_raw
from shared.testing import (
    handle_event,
    make_event,
    row_counts,
    service_worker_on_new_database,
    wait_until,
)

ADA = "00000000-0000-4000-8000-00000000ada0"
GRACE = "00000000-0000-4000-8000-00000000a0ac"
END = stage_history.END_VERSION


def at(day: int, month: int = 1, year: int = 2026) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


def contact_event(
    event_type: str, contact_id: str, version: int | None, when: datetime, **data: Any
) -> Any:
    """A contact.* event as the contacts service publishes it (a partial view is fine)."""
    body = {"id": contact_id, "email": f"{contact_id[-4:]}@example.com", **data}
    return make_event(
        event_type,
        body,
        "contacts",
        aggregate_id=contact_id,
        aggregate_version=version,
        occurred_at=when,
    )


@pytest.fixture
def apply(app: Any, db: Any) -> Any:
    """Every marketing handler of the event's type, in one transaction, as the consumer."""
    table = handlers(app.extensions["crm.settings"])

    def apply_event(event: Any) -> Any:
        handle_event(db, table, event)
        return event

    return apply_event


def history(db: Any, contact_id: str = ADA) -> list[tuple[int, str | None, int]]:
    """(version, stage, day of month) of a contact's rows, oldest version first."""
    with db.session() as session:
        rows = session.scalars(
            select(ContactStage)
            .where(ContactStage.contact_id == contact_id)
            .order_by(ContactStage.version)
        )
        return [(row.version, row.stage, row.occurred_at.day) for row in rows]


def stage_on(db: Any, moment: datetime, contact_id: str = ADA) -> str | None:
    with db.session() as session:
        return stage_history.contact_stage_at(session, contact_id, moment)


def test_each_version_keeps_its_stage_and_moment(apply, db):
    apply(contact_event("contact.created", ADA, 1, at(2), lifecycle_stage="lead"))
    apply(contact_event("contact.updated", ADA, 2, at(5), lifecycle_stage="customer"))
    apply(contact_event("contact.updated", ADA, 3, at(9), first_name="Augusta"))  # no stage
    assert history(db) == [(1, "lead", 2), (2, "customer", 5)]
    assert stage_on(db, at(1)) is None
    assert stage_on(db, at(4)) == "lead" and stage_on(db, at(5)) == "customer"
    assert stage_on(db, at(20)) == "customer"


def test_a_redelivered_or_reordered_version_is_kept_once(apply, db):
    churned = contact_event("contact.updated", ADA, 3, at(20), lifecycle_stage="churned")
    apply(churned)
    apply(contact_event("contact.created", ADA, 1, at(2), lifecycle_stage="lead"))  # late
    apply(contact_event("contact.updated", ADA, 2, at(10), lifecycle_stage="customer"))
    apply(churned)  # redelivered
    apply(contact_event("contact.updated", ADA, 2, at(10), lifecycle_stage="customer"))
    assert history(db) == [(1, "lead", 2), (2, "customer", 10), (3, "churned", 20)]
    assert stage_on(db, at(15)) == "customer" and stage_on(db, at(25)) == "churned"


def test_a_merge_ends_the_duplicate_and_keeps_the_survivors_stage(apply, db):
    apply(contact_event("contact.created", GRACE, 1, at(2), lifecycle_stage="customer"))
    apply(contact_event("contact.created", ADA, 1, at(3), lifecycle_stage="lead"))
    merged = contact_event(
        "contact.merged", ADA, 2, at(8), lifecycle_stage="customer", duplicate_id=GRACE
    )
    apply(merged)
    apply(merged)  # redelivered
    assert history(db, GRACE) == [(1, "customer", 2), (END, None, 8)]
    assert history(db, ADA) == [(1, "lead", 3), (2, "customer", 8)]
    assert stage_on(db, at(5), GRACE) == "customer" and stage_on(db, at(9), GRACE) is None


def test_an_erased_contact_ends_and_keeps_only_ids_and_stages(apply, db):
    apply(contact_event("contact.created", ADA, 1, at(2), lifecycle_stage="customer"))
    erased = make_event(
        "contact.erased",
        {"id": ADA, "merged_ids": [GRACE]},
        "contacts",
        aggregate_id=ADA,
        occurred_at=at(10),
    )
    apply(erased)
    apply(erased)
    apply(contact_event("contact.updated", ADA, 2, at(4), redacted=True))  # the source's
    assert history(db) == [(1, "customer", 2), (END, None, 10)]
    assert history(db, GRACE) == [(END, None, 10)]
    assert stage_on(db, at(5)) == "customer" and stage_on(db, at(11)) is None
    with db.session() as session:
        columns = set(ContactStage.__table__.columns.keys())
        assert columns == {"contact_id", "version", "stage", "occurred_at"}
        assert session.get(ContactStage, (ADA, 1)).stage == "customer"


def test_stage_at_gives_every_contacts_stage_at_a_moment(apply, db):
    apply(contact_event("contact.created", ADA, 1, at(2), lifecycle_stage="customer"))
    apply(contact_event("contact.updated", ADA, 2, at(6), lifecycle_stage="churned"))
    apply(contact_event("contact.created", GRACE, 1, at(4), lifecycle_stage="lead"))
    with db.session() as session:
        assert dict(session.execute(stage_history.stage_at(at(3))).all()) == {ADA: "customer"}
        later = dict(session.execute(stage_history.stage_at(at(7))).all())
        assert later == {ADA: "churned", GRACE: "lead"}


POISON = [
    ("contact.created", {"id": "not-a-uuid", "lifecycle_stage": "lead"}, 1),
    ("contact.updated", {"id": ADA, "lifecycle_stage": 7}, 2),
    ("contact.updated", {"id": ADA, "lifecycle_stage": "x" * 21}, 2),
    ("contact.updated", {"id": ADA, "lifecycle_stage": "lead"}, None),
    ("contact.merged", {"id": ADA, "duplicate_id": "nobody"}, 3),
    ("contact.erased", {"id": ADA, "merged_ids": "all"}, None),
]


@pytest.mark.parametrize(("event_type", "data", "version"), POISON)
def test_a_malformed_contact_event_is_permanent_and_changes_nothing(
    apply, db, event_type, data, version
):
    apply(contact_event("contact.created", ADA, 1, at(2), lifecycle_stage="lead"))
    before = row_counts(db, "contact_stages", "contacts")
    event = make_event(event_type, data, "test", aggregate_id=ADA, aggregate_version=version)
    with pytest.raises(PermanentError):
        apply(event)
    assert row_counts(db, "contact_stages", "contacts") == before
    assert history(db) == [(1, "lead", 2)]


def test_the_history_part_refuses_a_malformed_event_on_its_own(app, db):
    table = stage_history.handlers(app.extensions["crm.settings"])
    event = contact_event("contact.updated", ADA, 2, at(2), lifecycle_stage=["customer"])
    with pytest.raises(PermanentError):
        handle_event(db, table, event)
    assert row_counts(db, "contact_stages") == {"contact_stages": 0}


# --- through the real broker ----------------------------------------------------------------


@pytest.fixture
def running_worker(make_settings, database_url):
    settings = make_settings("marketing", database_url=database_url)
    with service_worker_on_new_database(settings, make_database, handlers) as running:
        yield running


def test_published_events_build_the_history_once_and_poison_is_dead_lettered(running_worker):
    settings, database = running_worker
    customer = contact_event("contact.created", ADA, 1, at(2), lifecycle_stage="customer")
    for _ in range(2):  # redelivered: the inbox and the row key both keep it once
        publish_raw(settings, "contact.created", customer.to_json())
    poison = contact_event("contact.updated", ADA, 2, at(3), lifecycle_stage={"x": 1})
    publish_raw(settings, "contact.updated", poison.to_json())
    churned = contact_event("contact.updated", ADA, 3, at(9), lifecycle_stage="churned")
    publish_raw(settings, "contact.updated", churned.to_json())
    wait_until(lambda: len(history(database)) == 2, 15, "for both versions")
    wait_until(lambda: len(list_dead_letters(settings)) == 1, 15, "for the dead letter")
    assert history(database) == [(1, "customer", 2), (3, "churned", 9)]
    [letter] = list_dead_letters(settings)
    assert letter.reason == "permanent" and str(uuid.UUID(poison.id)) in letter.body.decode()
