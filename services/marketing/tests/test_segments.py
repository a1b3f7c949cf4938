"""Segment membership: members follow contact events; relative dates, tags, custom fields,
engagement counters, static lists; the members query campaigns freeze recipients from."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from services.marketing import replica, segments
from services.marketing.models import Contact, Segment
from shared.events import isoformat, utcnow
from shared.testing import handle_event, make_event
from shared.web import ApiError

ADA = "00000000-0000-4000-8000-00000000ada0"
GRACE = "00000000-0000-4000-8000-00000000a0ac"
LINUS = "00000000-0000-4000-8000-0000000011a5"


@pytest.fixture
def contacts(app: Any, db: Any) -> Any:
    """Apply contact events (and others) the way the consumer does."""
    table = replica.handlers(app.extensions["crm.settings"])
    versions: dict[str, int] = {}

    def put(contact_id: str, event_type: str = "contact.updated", **fields: Any) -> None:
        versions[contact_id] = versions.get(contact_id, 0) + 1
        data = {"id": contact_id, "email": f"{contact_id[-4:]}@example.com", **fields}
        event = make_event(
            event_type,
            data,
            "contacts",
            aggregate_id=contact_id,
            aggregate_version=versions[contact_id],
        )
        handle_event(db, table, event)

    put.handlers = table  # type: ignore[attr-defined]
    return put


def members(db: Any, groups: list[dict[str, Any]]) -> list[str]:
    """The ids of a new dynamic segment's members, sorted; its count must agree."""
    with db.session() as session:
        data = {"name": "test", "kind": "dynamic", "filter": {"filter_groups": groups}}
        segment = segments.create_segment(session, data)
        query = segments.segment_members_query(session, segment).order_by(Contact.id)
        found = [contact.id for contact in session.scalars(query)]
        assert segments.count_members(session, segment) == len(found)
        return found


def one(field: str, operator: str, value: Any = None) -> list[dict[str, Any]]:
    """A filter of one group holding one filter."""
    return [{"filters": [{"field": field, "operator": operator, "value": value}]}]


def test_members_follow_contact_changes(contacts, db):
    contacts(ADA, lifecycle_stage="lead")
    contacts(GRACE, lifecycle_stage="customer")
    customers = one("lifecycle_stage", "eq", "customer")
    assert members(db, customers) == [GRACE]
    contacts(ADA, lifecycle_stage="customer")
    assert members(db, customers) == sorted([ADA, GRACE])
    contacts(GRACE, lifecycle_stage="churned")
    assert members(db, customers) == [ADA]


def test_groups_are_or_ed_and_filters_inside_and_ed(contacts, db):
    contacts(ADA, lifecycle_stage="lead", first_name="Ada")
    contacts(GRACE, lifecycle_stage="lead", first_name="Grace")
    contacts(LINUS, lifecycle_stage="customer", first_name="Linus")
    groups = [
        {
            "filters": [
                {"field": "lifecycle_stage", "operator": "eq", "value": "lead"},
                {"field": "first_name", "operator": "starts_with", "value": "gr"},
            ]
        },
        {"filters": [{"field": "lifecycle_stage", "operator": "eq", "value": "customer"}]},
    ]
    assert members(db, groups) == sorted([GRACE, LINUS])


def test_erased_merged_and_addressless_contacts_are_never_members(contacts, db):
    contacts(ADA)
    contacts(GRACE, email=None)
    contacts(LINUS)
    everyone: list[dict[str, Any]] = []
    assert members(db, everyone) == sorted([ADA, LINUS])
    handle_event(
        db,
        contacts.handlers,
        make_event("contact.erased", {"id": LINUS}, "contacts", aggregate_id=LINUS),
    )
    assert members(db, everyone) == [ADA]
    contacts(GRACE, "contact.merged", duplicate_id=ADA)
    assert members(db, everyone) == [GRACE]


def test_email_compares_case_insensitively(contacts, db):
    contacts(ADA, email="Ada@Example.COM")
    contacts(GRACE)
    assert members(db, one("email", "eq", "ADA@example.com")) == [ADA]
    assert members(db, one("email", "contains", "@EXAMPLE.")) == sorted([ADA, GRACE])


def test_last_activity_relative_to_now(contacts, db):
    now = utcnow()
    contacts(ADA, last_activity_at=isoformat(now - timedelta(days=200)))
    contacts(GRACE, last_activity_at=isoformat(now - timedelta(days=3)))
    contacts(LINUS, last_activity_at=None)
    assert members(db, one("last_activity_at", "lt", "now-90d")) == [ADA]
    assert members(db, one("last_activity_at", "lt", {"relative": "-90d"})) == [ADA]
    assert members(db, one("last_activity_at", "gte", "now-1w")) == [GRACE]
    assert members(db, one("last_activity_at", "gte", {"relative": "-7d"})) == [GRACE]
    assert members(db, one("last_activity_at", "lte", "now")) == sorted([ADA, GRACE])
    assert members(db, one("last_activity_at", "exists", False)) == [LINUS]
    absolute = isoformat(now - timedelta(days=30))
    assert members(db, one("last_activity_at", "gt", absolute)) == [GRACE]


def test_created_at_within_the_last_days(contacts, db):
    now = utcnow()
    contacts(ADA, created_at=isoformat(now - timedelta(hours=5)))
    contacts(GRACE, created_at=isoformat(now - timedelta(days=40)))
    assert members(db, one("created_at", "gte", "now-30d")) == [ADA]
    assert members(db, one("created_at", "gt", "now-6h")) == [ADA]
    assert members(db, one("created_at", "lt", "now-6h")) == [GRACE]


def test_tags_mean_has_the_tag(contacts, db):
    contacts(ADA, tags=["VIP", "beta"])
    contacts(GRACE, tags=["beta"])
    contacts(LINUS, tags=[])
    assert members(db, one("tags", "eq", "vip")) == [ADA]
    assert members(db, one("tags", "neq", "VIP")) == sorted([GRACE, LINUS])
    assert members(db, one("tags", "in", ["vip", "beta"])) == sorted([ADA, GRACE])
    assert members(db, one("tags", "exists", True)) == sorted([ADA, GRACE])
    assert members(db, one("tags", "exists", False)) == [LINUS]
    both = [
        {
            "filters": [
                {"field": "tags", "operator": "eq", "value": "beta"},
                {"field": "tags", "operator": "neq", "value": "vip"},
            ]
        }
    ]
    assert members(db, both) == [GRACE]


def test_custom_fields_compare_by_the_type_of_the_value(contacts, db):
    contacts(ADA, custom_fields={"plan": "gold", "seats": 12, "score": "7.5", "trial": True})
    contacts(GRACE, custom_fields={"plan": "silver", "seats": 3, "score": "high", "trial": False})
    contacts(LINUS, custom_fields={"options": ["red", "blue"]})
    assert members(db, one("custom_fields.plan", "eq", "gold")) == [ADA]
    assert members(db, one("custom_fields.plan", "neq", "gold")) == sorted([GRACE, LINUS])
    assert members(db, one("custom_fields.seats", "gt", 5)) == [ADA]
    assert members(db, one("custom_fields.seats", "in", [3, 4])) == [GRACE]
    assert members(db, one("custom_fields.score", "gte", 7)) == [ADA]  # numeric text
    assert members(db, one("custom_fields.score", "eq", "high")) == [GRACE]
    assert members(db, one("custom_fields.trial", "eq", True)) == [ADA]
    assert members(db, one("custom_fields.trial", "eq", False)) == [GRACE]
    assert members(db, one("custom_fields.plan", "exists", False)) == [LINUS]
    assert members(db, one("custom_fields.options", "contains", "blue")) == [LINUS]


def test_engagement_counters_and_lifetime_value_are_numbers(contacts, db):
    contacts(ADA, lifetime_value={"amount": "1500.00", "currency": "EUR"})
    contacts(GRACE, lifetime_value={"amount": "20.00", "currency": "EUR"})
    for message in (str(uuid.uuid4()), str(uuid.uuid4())):
        opened = make_event(
            "email.opened", {"message_id": message, "contact_id": GRACE}, "notifications"
        )
        handle_event(db, contacts.handlers, opened)
    ticket = str(uuid.uuid4())
    created = make_event(
        "ticket.created",
        {"id": ticket, "contact_id": ADA, "status": "new"},
        "support",
        aggregate_id=ticket,
        aggregate_version=1,
    )
    handle_event(db, contacts.handlers, created)
    assert members(db, one("lifetime_value", "gte", "1000")) == [ADA]
    assert members(db, one("emails_opened", "gte", 2)) == [GRACE]
    assert members(db, one("emails_clicked", "eq", 0)) == sorted([ADA, GRACE])
    assert members(db, one("tickets_open", "gt", 0)) == [ADA]
    assert members(db, one("deals_won", "eq", 0)) == sorted([ADA, GRACE])


BAD_FILTERS = [
    ("nickname", "eq", "x", "Unknown field"),
    ("lifecycle_stage", "eq", "prospect", "lifecycle stage"),
    ("lifetime_value", "gt", "lots", "number"),
    ("last_activity_at", "lt", "now-90x", "relative"),
    ("last_activity_at", "lt", "last tuesday", "ISO 8601"),
    ("last_activity_at", "eq", "now-3d", "lt, lte, gt or gte"),
    ("created_at", "gt", {"relative": -3}, "relative"),
    ("created_at", "gt", "now-99999999d", "relative"),
    ("created_at", "lt", "now-40000d", "100 years"),
    ("tags", "lt", "vip", "tags take"),
    ("tags", "eq", "", "tag"),
    ("tags", "in", "vip", "list"),
    ("tags", "in", [], "list"),
    ("custom_fields.Bad-Name", "eq", "x", "lower-case"),
    ("custom_fields.trial", "gt", True, "eq or neq"),
    ("custom_fields.seats", "contains", 4, "text"),
    ("emails_opened", "in", [], "list"),
]


@pytest.mark.parametrize(("field", "operator", "value", "message"), BAD_FILTERS)
def test_a_bad_filter_is_a_422_naming_it(db, field, operator, value, message):
    good = {"field": "email", "operator": "exists", "value": True}
    groups = [{"filters": [good, {"field": field, "operator": operator, "value": value}]}]
    with db.session() as session, pytest.raises(ApiError) as raised:
        segments.create_segment(
            session, {"name": "bad", "kind": "dynamic", "filter": {"filter_groups": groups}}
        )
    assert raised.value.status == 422
    [text] = raised.value.errors["filter"]["filter_groups"]["0"]["filters"]["1"]
    assert message in text


def test_a_static_list_holds_the_contacts_added(contacts, db):
    for contact_id in (ADA, GRACE, LINUS):
        contacts(contact_id)
    with db.session() as session:
        segment = segments.create_segment(session, {"name": "list", "kind": "static"})
        assert segments.add_members(session, segment, [ADA, GRACE, ADA]) == 2
        assert segments.add_members(session, segment, [GRACE, LINUS]) == 1
        segments.remove_member(session, segment, GRACE)
        query = segments.segment_members_query(session, segment).order_by(Contact.id)
        assert [c.id for c in session.scalars(query)] == sorted([ADA, LINUS])
        assert segments.count_members(session, segment) == 2 and segment.version == 4


def test_static_members_move_with_a_merge(contacts, db):
    contacts(ADA)
    contacts(GRACE)
    with db.session() as session:
        segment = segments.create_segment(session, {"name": "list", "kind": "static"})
        segments.add_members(session, segment, [ADA])
        segment_id = segment.id
    contacts(GRACE, "contact.merged", duplicate_id=ADA)
    with db.session() as session:
        segment = session.get(Segment, segment_id)
        query = segments.segment_members_query(session, segment)
        assert [c.id for c in session.scalars(query)] == [GRACE]
