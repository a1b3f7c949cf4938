"""The suppression list kept from subscription and bounce events."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from services.notifications import suppressions
from services.notifications.models import ContactAddress, Message
from shared.bus import PermanentError
from shared.events import utcnow
from shared.testing import handle_event, make_event, row_counts

ADA = "Ada@Example.com"


@pytest.fixture
def apply(app: Any, db: Any) -> Any:
    handlers = suppressions.handlers(app.extensions["crm.settings"])

    def apply_event(event_type: str, data: dict[str, Any], **fields: Any) -> Any:
        event = make_event(event_type, data, "marketing", **fields)
        handle_event(db, handlers, event)
        return event

    return apply_event


def reason(db: Any, email: str = ADA) -> str | None:
    with db.session() as session:
        return suppressions.is_suppressed(session, email)


def test_an_unsubscription_suppresses_the_address_in_any_case(apply, db):
    apply("subscription.changed", {"email": ADA, "status": "unsubscribed"})
    assert reason(db, "ada@example.com") == reason(db, " ADA@EXAMPLE.COM ") == "unsubscribed"
    assert reason(db, "someone@example.com") is None


def test_leaving_one_list_suppresses_nothing_leaving_all_does(apply, db):
    one = {"email": ADA, "status": "unsubscribed", "list_id": "l-1", "all_lists": False}
    apply("subscription.changed", one)
    assert reason(db) is None
    every = {"email": ADA, "status": "unsubscribed", "list_id": None, "all_lists": True}
    apply("subscription.changed", every)
    assert reason(db) == "unsubscribed"


def test_a_double_opt_in_lifts_an_unsubscription(apply, db):
    apply("subscription.changed", {"email": ADA, "status": "unsubscribed"})
    apply("subscription.changed", {"email": ADA, "status": "subscribed", "source": "double_opt_in"})
    assert reason(db) is None


@pytest.mark.parametrize("source", ["Double-Opt-In", "double opt-in"])
def test_double_opt_in_may_be_spelled_loosely(apply, db, source):
    apply("subscription.changed", {"email": ADA, "status": "unsubscribed"})
    apply("subscription.changed", {"email": ADA, "status": "subscribed", "source": source})
    assert reason(db) is None


def test_a_subscription_without_confirmation_lifts_nothing(apply, db):
    apply("subscription.changed", {"email": ADA, "status": "unsubscribed"})
    apply("subscription.changed", {"email": ADA, "status": "subscribed", "source": "import"})
    apply("subscription.changed", {"email": ADA, "status": "subscribed"})
    assert reason(db) == "unsubscribed"


def test_a_hard_bounce_suppresses_and_no_opt_in_lifts_it(apply, db):
    apply("email.bounced", {"to": ADA, "hard": True})
    apply("subscription.changed", {"email": ADA, "status": "subscribed", "source": "double_opt_in"})
    assert reason(db) == "bounced"


def test_a_soft_bounce_changes_nothing(apply, db):
    apply("email.bounced", {"to": ADA, "hard": False})
    apply("email.bounced", {"to": ADA})
    assert reason(db) is None


def test_the_strongest_reason_wins(apply, db):
    apply("subscription.changed", {"email": ADA, "status": "unsubscribed"})
    apply("email.bounced", {"email": ADA, "hard": True})
    assert reason(db) == "bounced"
    apply("subscription.changed", {"email": ADA, "status": "unsubscribed"})
    assert reason(db) == "bounced"


def test_an_older_opt_in_does_not_lift_a_newer_unsubscription(apply, db):
    now = utcnow()
    apply("subscription.changed", {"email": ADA, "status": "unsubscribed"}, occurred_at=now)
    late = {"email": ADA, "status": "subscribed", "source": "double_opt_in"}
    apply("subscription.changed", late, occurred_at=now - timedelta(minutes=5))
    assert reason(db) == "unsubscribed"


def test_a_bounce_of_our_own_message_names_its_address(apply, db):
    message_id = str(uuid.uuid4())
    with db.session() as session:
        session.add(
            Message(
                id=message_id,
                to_address=ADA,
                to_key=ADA.lower(),
                from_address="crm@example.com",
                subject="s",
                body_text="b",
            )
        )
    apply("email.bounced", {"message_id": message_id, "hard": True})
    assert reason(db) == "bounced"


def test_a_subscription_naming_only_a_contact_uses_its_address(apply, db):
    contact_id = str(uuid.uuid4())
    with db.session() as session:
        session.add(ContactAddress(contact_id=contact_id, email=ADA, name="Ada"))
    apply("subscription.changed", {"contact_id": contact_id, "status": "unsubscribed"})
    assert reason(db) == "unsubscribed"


def test_the_same_event_twice_keeps_one_row(apply, app, db):
    event = apply("subscription.changed", {"email": ADA, "status": "unsubscribed"})
    handle_event(db, suppressions.handlers(app.extensions["crm.settings"]), event)
    assert row_counts(db, "suppressions") == {"suppressions": 1}


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("subscription.changed", {"status": "unsubscribed"}),
        ("subscription.changed", {"email": "not-an-address", "status": "unsubscribed"}),
        ("subscription.changed", {"email": 42, "status": "unsubscribed"}),
        ("email.bounced", {"hard": True}),
        ("email.bounced", {"hard": True, "message_id": str(uuid.uuid4())}),
    ],
)
def test_events_that_name_no_address_are_permanent_errors(apply, db, event_type, data):
    with pytest.raises(PermanentError):
        apply(event_type, data)
    assert reason(db) is None


def test_other_statuses_change_nothing(apply, db):
    apply("subscription.changed", {"email": ADA, "status": "pending"})
    assert reason(db) is None
