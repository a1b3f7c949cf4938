"""The contact replica and engagement facts: version order, merges, erasure, counting once,
poison events; and one run through the real broker."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from services.marketing import consent, replica, segments
from services.marketing.app import make_database
from services.marketing.models import Contact, ContactFact, ContactTag, Segment, SegmentMember
from shared.bus import PermanentError
from shared.deadletters import list_dead_letters, publish_raw
from shared.testing import consuming_worker, handle_event, make_event, row_counts, wait_until

ADA = "00000000-0000-4000-8000-00000000ada0"
GRACE = "00000000-0000-4000-8000-00000000a0ac"
COMPANY = "00000000-0000-4000-8000-0000000000c0"


def contact_data(contact_id: str, version: int, **fields: Any) -> dict[str, Any]:
    """A contact as the contacts service's events carry it (contact_view)."""
    data = {
        "id": contact_id,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "Ada@Example.com",
        "phone": None,
        "company_id": COMPANY,
        "title": None,
        "lifecycle_stage": "lead",
        "owner_id": None,
        "tags": ["VIP", "newsletter"],
        "custom_fields": {"plan": "gold"},
        "lifetime_value": {"amount": "120.50", "currency": "EUR"},
        "last_activity_at": "2026-01-10T09:00:00Z",
        "version": version,
        "created_at": "2025-06-01T12:00:00Z",
        "updated_at": "2026-01-10T09:00:00Z",
    }
    return {**data, **fields}


def contact_event(event_type: str, contact_id: str, version: int, **fields: Any) -> Any:
    data = contact_data(contact_id, version, **fields)
    return make_event(
        event_type, data, "contacts", aggregate_id=contact_id, aggregate_version=version
    )


def aggregate_event(
    event_type: str, source: str, aggregate_id: str, version: int | None, **data: Any
) -> Any:
    return make_event(
        event_type, data, source, aggregate_id=aggregate_id, aggregate_version=version
    )


@pytest.fixture
def apply(app: Any, db: Any) -> Any:
    table = replica.handlers(app.extensions["crm.settings"])

    def apply_event(event: Any) -> Any:
        handle_event(db, table, event)
        return event

    return apply_event


def row(db: Any, contact_id: str = ADA) -> Contact | None:
    with db.session() as session:
        found = session.get(Contact, contact_id)
        session.expunge_all()
        return found


def tags(db: Any, contact_id: str = ADA) -> list[str]:
    with db.session() as session:
        query = select(ContactTag.tag).where(ContactTag.contact_id == contact_id)
        return sorted(session.scalars(query))


def counters(db: Any, contact_id: str = ADA) -> tuple[int, int, int, int]:
    held = row(db, contact_id)
    assert held is not None
    return (held.emails_opened, held.emails_clicked, held.deals_won, held.tickets_open)


# --- contacts -------------------------------------------------------------------------------


def test_a_created_contact_is_replicated_with_its_tags_and_fields(apply, db):
    apply(contact_event("contact.created", ADA, 1))
    held = row(db)
    assert held.email == "Ada@Example.com" and held.email_key == "ada@example.com"
    assert (held.first_name, held.last_name, held.company_id) == ("Ada", "Lovelace", COMPANY)
    assert held.custom_fields == {"plan": "gold"} and str(held.lifetime_value) == "120.50"
    assert held.currency == "EUR" and held.version == 1 and not held.erased
    assert held.contact_created_at.year == 2025 and held.last_activity_at.month == 1
    assert tags(db) == ["newsletter", "vip"]


def test_the_newest_version_wins_whatever_the_order(apply, db):
    apply(contact_event("contact.updated", ADA, 3, email="ada@new.example", tags=["a"]))
    apply(contact_event("contact.created", ADA, 1))  # late
    apply(contact_event("contact.updated", ADA, 2, email="ada@old.example"))  # late
    held = row(db)
    assert held.email == "ada@new.example" and held.version == 3
    assert tags(db) == ["a"]


def test_a_redelivered_event_is_applied_once(apply, db):
    created = apply(contact_event("contact.created", ADA, 1))
    apply(contact_event("contact.updated", ADA, 2, first_name="Augusta"))
    apply(created)
    assert row(db).first_name == "Augusta" and row(db).version == 2


def test_fields_an_event_leaves_out_keep_their_value(apply, db):
    apply(contact_event("contact.created", ADA, 1))
    apply(aggregate_event("contact.updated", "contacts", ADA, 2, id=ADA, first_name="Augusta"))
    held = row(db)
    assert held.first_name == "Augusta" and held.email == "Ada@Example.com"
    assert tags(db) == ["newsletter", "vip"]


def test_a_merge_retires_the_duplicate_and_moves_its_lists_and_facts(apply, db):
    apply(contact_event("contact.created", ADA, 1))
    apply(contact_event("contact.created", GRACE, 1, email="grace@example.com", tags=["x"]))
    message = str(uuid.uuid4())
    apply(aggregate_event("email.opened", "notifications", message, 2, contact_id=GRACE))
    static = add_static_segment(db, [GRACE])
    merged = contact_event("contact.merged", ADA, 2, duplicate_id=GRACE, first_name="Ada L.")
    apply(merged)
    duplicate = row(db, GRACE)
    assert duplicate.merged_into == ADA and duplicate.email is None and tags(db, GRACE) == []
    assert row(db).first_name == "Ada L." and counters(db)[0] == 1
    assert member_ids(db, static) == [ADA]
    apply(contact_event("contact.updated", GRACE, 5, email="grace@late.example"))  # late
    apply(merged)  # redelivered
    assert row(db, GRACE).email is None and counters(db)[0] == 1
    apply(aggregate_event("email.clicked", "notifications", message, 3, contact_id=GRACE))
    assert counters(db)[:2] == (1, 1)  # a fact naming the duplicate counts for the survivor


def test_an_erased_contact_becomes_a_tombstone_that_late_events_cannot_revive(
    apply, db, monkeypatch
):
    forgotten: list[tuple[str, str | None]] = []

    def remember(_session: Any, contact_id: str, email: str | None) -> None:
        forgotten.append((contact_id, email))

    monkeypatch.setattr(consent, "forget_contact", remember)
    apply(contact_event("contact.created", ADA, 1))
    apply(aggregate_event("deal.won", "sales", str(uuid.uuid4()), 4, contact_id=ADA))
    static = add_static_segment(db, [ADA])
    apply(aggregate_event("contact.erased", "contacts", ADA, None, id=ADA, merged_ids=[GRACE]))
    held = row(db)
    assert held.erased and held.email is None and held.first_name is None
    assert held.custom_fields == {} and held.deals_won == 0 and tags(db) == []
    assert row(db, GRACE).erased
    assert forgotten == [(ADA, "Ada@Example.com"), (GRACE, None)]
    assert row_counts(db, "contact_facts", "segment_members") == {
        "contact_facts": 0,
        "segment_members": 0,
    }
    apply(contact_event("contact.updated", ADA, 9))  # late
    apply(aggregate_event("email.opened", "notifications", str(uuid.uuid4()), 1, contact_id=ADA))
    assert row(db).email is None and counters(db) == (0, 0, 0, 0)
    assert member_ids(db, static) == []


def test_erasure_reaches_consent_through_the_real_function(apply, db):
    apply(contact_event("contact.created", ADA, 1))
    apply(aggregate_event("contact.erased", "contacts", ADA, None, id=ADA))
    assert row(db).erased


def test_events_the_source_redacted_are_skipped(apply, db):
    apply(contact_event("contact.created", ADA, 1))
    apply(aggregate_event("contact.updated", "contacts", ADA, 2, id=ADA, redacted=True))
    assert row(db).version == 1 and row(db).email == "Ada@Example.com"


POISON = [
    ("contact.created", {"id": "not-a-uuid"}, 1),
    ("contact.updated", {"id": ADA, "email": 42}, 2),
    ("contact.updated", {"id": ADA, "tags": "vip"}, 2),
    ("contact.updated", {"id": ADA, "custom_fields": ["x"]}, 2),
    ("contact.updated", {"id": ADA, "lifetime_value": {"amount": "lots"}}, 2),
    ("contact.updated", {"id": ADA, "last_activity_at": "yesterday"}, 2),
    ("contact.updated", {"id": ADA, "company_id": "acme"}, 2),
    ("contact.updated", {"id": ADA}, None),
    ("contact.merged", {"id": ADA, "duplicate_id": None}, 3),
    ("contact.erased", {"id": ADA, "merged_ids": "all"}, None),
    ("email.opened", {"message_id": "m-1", "contact_id": ADA}, 1),
    ("email.clicked", {"message_id": str(uuid.uuid4()), "contact_id": 7}, 1),
    ("deal.won", {"id": str(uuid.uuid4()), "contact_id": ADA}, None),
    ("ticket.created", {"id": str(uuid.uuid4()), "contact_id": ADA, "status": "weird"}, 1),
]


@pytest.mark.parametrize(("event_type", "data", "version"), POISON)
def test_a_malformed_event_is_permanent_and_changes_nothing(apply, db, event_type, data, version):
    apply(contact_event("contact.created", ADA, 1))
    before = row_counts(db, "contacts", "contact_tags", "contact_facts")
    event = aggregate_event(event_type, "test", ADA, version, **data)
    with pytest.raises(PermanentError):
        apply(event)
    assert row_counts(db, "contacts", "contact_tags", "contact_facts") == before
    assert row(db).version == 1 and row(db).email == "Ada@Example.com"


# --- engagement facts -----------------------------------------------------------------------


def test_opens_and_clicks_count_once_per_email(apply, db):
    apply(contact_event("contact.created", ADA, 1))
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    opened = apply(aggregate_event("email.opened", "notifications", first, 2, contact_id=ADA))
    apply(opened)  # redelivered
    apply(aggregate_event("email.opened", "notifications", second, 2, contact_id=ADA))
    for _ in range(3):  # three clicks in one email
        apply(aggregate_event("email.clicked", "notifications", first, 2, contact_id=ADA))
    apply(aggregate_event("email.opened", "notifications", str(uuid.uuid4()), 2, contact_id=None))
    assert counters(db) == (2, 1, 0, 0)


def test_deals_won_follow_reopening_and_deletion(apply, db):
    apply(contact_event("contact.created", ADA, 1))
    deal, other = str(uuid.uuid4()), str(uuid.uuid4())
    apply(aggregate_event("deal.won", "sales", deal, 3, contact_id=ADA, status="won"))
    apply(aggregate_event("deal.won", "sales", other, 2, contact_id=ADA, status="won"))
    assert counters(db)[2] == 2
    apply(aggregate_event("deal.reopened", "sales", deal, 4, contact_id=ADA, status="open"))
    apply(aggregate_event("deal.won", "sales", deal, 3, contact_id=ADA, status="won"))  # late
    assert counters(db)[2] == 1
    apply(aggregate_event("deal.won", "sales", deal, 5, contact_id=ADA, status="won"))
    apply(aggregate_event("deal.deleted", "sales", other, 3, contact_id=ADA, status="won"))
    assert counters(db)[2] == 1


def ticket(event_type: str, ticket_id: str, version: int, status: str, **data: Any) -> Any:
    fields = {"id": ticket_id, "ticket_id": ticket_id, "contact_id": ADA, "status": status}
    return aggregate_event(event_type, "support", ticket_id, version, **{**fields, **data})


def test_open_tickets_follow_the_status_flow_including_reopening(apply, db):
    apply(contact_event("contact.created", ADA, 1))
    one, two = str(uuid.uuid4()), str(uuid.uuid4())
    apply(ticket("ticket.created", one, 1, "new"))
    apply(ticket("ticket.created", two, 1, "open"))
    assert counters(db)[3] == 2
    apply(ticket("ticket.status_changed", one, 2, "resolved"))
    apply(ticket("ticket.resolved", one, 2, "resolved"))  # same version: counted once
    assert counters(db)[3] == 1
    apply(ticket("ticket.reopened", one, 3, "open"))
    assert counters(db)[3] == 2
    for version, status in ((4, "resolved"), (5, "closed")):
        apply(ticket("ticket.status_changed", one, version, status))
    apply(ticket("ticket.deleted", two, 2, "open"))
    apply(ticket("ticket.resolved", two, 2, "resolved"))  # late, and never below 0
    assert counters(db)[3] == 0


def test_a_late_ticket_created_does_not_reopen_a_resolved_ticket(apply, db):
    apply(contact_event("contact.created", ADA, 1))
    ticket_id = str(uuid.uuid4())
    apply(ticket("ticket.resolved", ticket_id, 3, "resolved"))
    apply(ticket("ticket.created", ticket_id, 1, "new"))
    assert counters(db)[3] == 0


def test_facts_before_the_contact_are_kept_for_it(apply, db):
    apply(aggregate_event("email.opened", "notifications", str(uuid.uuid4()), 2, contact_id=ADA))
    assert row(db).version == 0 and row(db).email is None
    apply(contact_event("contact.created", ADA, 1))
    assert row(db).email == "Ada@Example.com" and counters(db)[0] == 1


def test_a_ticket_moved_to_another_contact_counts_for_it(apply, db):
    ticket_id = str(uuid.uuid4())
    apply(ticket("ticket.created", ticket_id, 1, "open"))
    apply(ticket("ticket.updated", ticket_id, 2, "open", contact_id=GRACE))
    assert counters(db, ADA)[3] == 0 and counters(db, GRACE)[3] == 1
    with db.session() as session:
        fact = session.get(ContactFact, ("ticket_open", ticket_id))
        assert fact.contact_id == GRACE


# --- helpers shared with the broker test ----------------------------------------------------


def add_static_segment(db: Any, contact_ids: list[str]) -> str:
    with db.session() as session:
        segment = segments.create_segment(session, {"name": "list", "kind": "static"})
        segments.add_members(session, segment, contact_ids)
        return segment.id


def member_ids(db: Any, segment_id: str) -> list[str]:
    with db.session() as session:
        segment = session.get(Segment, segment_id)
        query = segments.segment_members_query(session, segment).order_by(Contact.id)
        return [contact.id for contact in session.scalars(query)]


def dynamic_segment(db: Any, groups: list[dict[str, Any]]) -> str:
    with db.session() as session:
        data = {"name": "dynamic", "kind": "dynamic", "filter": {"filter_groups": groups}}
        return segments.create_segment(session, data).id


# --- through the real broker ----------------------------------------------------------------


@pytest.fixture
def running_worker(make_settings, database_url):
    settings = make_settings("marketing", database_url=database_url)
    database = make_database(settings)
    database.create_all()
    with consuming_worker(settings, database, replica.handlers(settings)):
        yield settings, database
    database.dispose()


def test_published_contact_events_reach_segment_members_and_poison_is_dead_lettered(
    running_worker,
):
    settings, database = running_worker
    vip_filter = {"field": "tags", "operator": "eq", "value": "vip"}
    vips = dynamic_segment(database, [{"filters": [vip_filter]}])
    publish_raw(settings, "contact.created", contact_event("contact.created", ADA, 1).to_json())
    poison = contact_event("contact.created", GRACE, 1, email=["not", "text"])
    publish_raw(settings, "contact.created", poison.to_json())
    publish_raw(settings, "contact.created", b"{not json")
    grace = contact_event("contact.created", GRACE, 2, email="grace@example.com", tags=["VIP"])
    publish_raw(settings, "contact.created", grace.to_json())
    both = sorted([ADA, GRACE])
    wait_until(lambda: member_ids(database, vips) == both, 15, "for both members")
    dropped = contact_event("contact.updated", ADA, 2, tags=["newsletter"])
    publish_raw(settings, "contact.updated", dropped.to_json())
    wait_until(lambda: member_ids(database, vips) == [GRACE], 15, "for Ada to leave")
    wait_until(lambda: len(list_dead_letters(settings)) == 2, 15, "for the dead letters")
    letters = list_dead_letters(settings)
    reasons = sorted(letter.reason for letter in letters)
    assert reasons == ["malformed", "permanent"]
    [permanent] = [letter for letter in letters if letter.reason == "permanent"]
    assert json.loads(permanent.body)["id"] == poison.id and "email" in permanent.error
    with database.session() as session:
        assert session.get(SegmentMember, (vips, GRACE)) is None  # dynamic: no rows stored
