"""Consent from events and for campaigns: hard bounces (once, however often delivered; poison
dead-lettered), erasure, the ranks of suppressions, the conditions campaigns filter with,
and the real broker."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from services.marketing import consent, suppressions
from services.marketing.app import make_database
from services.marketing.ledger import Origin
from services.marketing.models import Contact
from services.marketing.tests.conftest import row_counts
from services.marketing.tests.consent_helpers import (
    SUBSCRIPTIONS,
    add_contact,
    add_list,
    changes,
    ledger,
    rows,
    status_of,
    subscribe,
)
from services.marketing.tests.consent_helpers import suppressions as suppression_rows
from shared.bus import PermanentError
from shared.deadletters import list_dead_letters, publish_raw
from shared.testing import (
    consuming_worker,
    every_value,
    handle_event,
    make_event,
    outbox_envelopes,
    wait_until,
)

TABLES = ("subscriptions", "consent_records", "suppressions", "outbox")


@pytest.fixture
def settings(app: Any) -> Any:
    return app.extensions["crm.settings"]


def bounce(to: Any, contact_id: str | None = None, hard: bool = True, **fields: Any) -> Any:
    """An `email.bounced` as notifications publishes it (the message, plus hard/error/code)."""
    message_id = str(uuid.uuid4())
    data = {
        "message_id": message_id,
        "to": to,
        "contact_id": contact_id,
        "campaign_id": None,
        "category": "marketing",
        "status": "bounced",
        "hard": hard,
        "error": "550 5.1.1 no such user",
        "code": 550,
        **fields,
    }
    return make_event("email.bounced", data, "notifications", aggregate_id=message_id)


def apply(db: Any, settings: Any, event: Any) -> None:
    handle_event(db, consent.handlers(settings), event)


# --- hard bounces ---------------------------------------------------------------------------


def test_a_hard_bounce_suppresses_the_address_and_unsubscribes_its_contact(client, db, settings):
    news, offers = add_list(db, "News"), add_list(db, "Offers")
    ada, grace = add_contact(db, "Ada@Example.com"), add_contact(db, "grace@example.com")
    for contact, list_id in ((ada, news), (ada, offers), (grace, news)):
        subscribe(client, contact, list_id)
    event = bounce("ADA@example.com", ada)
    apply(db, settings, event)

    [held] = suppression_rows(db)
    assert (held.email, held.reason, held.source) == ("ada@example.com", "bounced", "bounce")
    assert {status_of(db, ada, news), status_of(db, ada, offers)} == {"unsubscribed"}
    assert status_of(db, grace, news) == "subscribed"
    bounced = changes(db)[3:]
    assert sorted((item["list"], item["status"], item["source"]) for item in bounced) == [
        ("News", "unsubscribed", "bounce"),
        ("Offers", "unsubscribed", "bounce"),
    ]
    assert {item["contact_id"] for item in bounced} == {ada}
    lines = [(line.action, line.reason, line.source) for line in ledger(db)[3:]]
    assert ("suppressed", "bounced", "bounce") in lines and len(lines) == 3


def test_the_same_bounce_delivered_twice_is_applied_once(client, db, settings):
    news, ada = add_list(db, "News"), add_contact(db)
    subscribe(client, ada, news)
    event = bounce("ada@example.com", ada)
    apply(db, settings, event)
    after_first = row_counts(db, *TABLES)
    apply(db, settings, event)
    apply(db, settings, bounce("ada@example.com", ada))  # another bounce: nothing new either
    assert row_counts(db, *TABLES) == after_first
    assert [item["status"] for item in changes(db)] == ["subscribed", "unsubscribed"]


def test_a_soft_bounce_changes_nothing(client, db, settings):
    news, ada = add_list(db, "News"), add_contact(db)
    subscribe(client, ada, news)
    before = row_counts(db, *TABLES)
    apply(db, settings, bounce("ada@example.com", ada, hard=False))
    apply(db, settings, bounce("ada@example.com", ada, hard="yes"))
    assert row_counts(db, *TABLES) == before


def test_a_bounce_of_an_unknown_address_only_suppresses_it(db, settings):
    apply(db, settings, bounce("stranger@example.com", email="ignored@example.com"))
    assert [row.email for row in suppression_rows(db)] == ["stranger@example.com"]
    assert changes(db) == []


def test_a_bounce_of_an_old_address_leaves_a_contact_who_moved_on(client, db, settings):
    news = add_list(db, "News")
    moved = add_contact(db, "new@example.com")  # the replica knows the newer address
    subscribe(client, moved, news)
    apply(db, settings, bounce("old@example.com", moved))
    assert status_of(db, moved, news) == "subscribed"
    assert [row.email for row in suppression_rows(db)] == ["old@example.com"]


@pytest.mark.parametrize(
    "data",
    [
        {"hard": True},
        {"hard": True, "to": None},
        {"hard": True, "to": "no address"},
        {"hard": True, "to": ["ada@example.com"]},
        {"hard": True, "to": "a" * 250 + "@example.com"},
    ],
)
def test_a_hard_bounce_without_an_address_is_permanent(db, settings, data):
    before = row_counts(db, *TABLES)
    with pytest.raises(PermanentError):
        apply(db, settings, make_event("email.bounced", data, "notifications"))
    assert row_counts(db, *TABLES) == before


# --- erasure --------------------------------------------------------------------------------


def test_forgetting_a_contact_keeps_only_the_hash_of_the_address(client, anonymous, db):
    news, ada = add_list(db, "News"), add_contact(db, "Ada@Example.com", first_name="Ada")
    grace = add_contact(db, "grace@example.com")
    subscribe(client, ada, news, ip="203.0.113.9", user_agent="Lovelace-Browser")
    subscribe(client, grace, news)
    client.post(SUBSCRIPTIONS, json={"contact_id": ada, "list_id": news, "status": "unsubscribed"})
    client.post(
        "/api/v1/suppressions", json={"email": "ada@example.com"}, headers={"Idempotency-Key": "k"}
    )
    assert any("ada@example.com" in value for value in every_value(db))

    with db.session() as session:  # as the replica does on contact.erased
        session.execute(
            sa.update(Contact)
            .where(Contact.id == ada)
            .values(email=None, email_key=None, first_name=None, erased=True)
        )
        consent.forget_contact(session, ada, "Ada@Example.com")

    her_data = ("ada@example.com", "Ada@Example.com", "203.0.113.9", "Lovelace-Browser")
    leaks = [value for value in every_value(db) if any(word in value for word in her_data)]
    assert leaks == [], leaks
    assert [row.contact_id for row in rows(db)] == [grace]
    assert {line.contact_id for line in ledger(db)} == {grace, None}
    [held] = suppression_rows(db)
    assert (held.email, held.reason) == (None, "erased")
    with db.session() as session:
        assert consent.is_suppressed(session, " ADA@example.com")
        assert consent.suppressed_among(session, ["Ada@Example.com", "grace@example.com"]) == {
            "Ada@Example.com"
        }
    redacted = [
        envelope["data"]
        for envelope in outbox_envelopes(db, "subscription.changed")
        if envelope["data"].get("redacted")
    ]
    assert len(redacted) == 2 and all(item["contact_id"] == ada for item in redacted)


def test_a_forgotten_address_comes_back_only_when_an_admin_forces_it(client, db):
    news, ada = add_list(db, "News"), add_contact(db)
    with db.session() as session:
        consent.forget_contact(session, str(uuid.uuid4()), "ada@example.com")
    refused = subscribe(client, ada, news)
    assert refused.status_code == 409 and "erased" in refused.get_json()["detail"]
    assert client.delete("/api/v1/suppressions/ada@example.com").status_code == 409
    assert client.delete("/api/v1/suppressions/ada@example.com?force=true").status_code == 204
    assert subscribe(client, ada, news).status_code == 201


def test_forgetting_someone_never_seen_leaves_nothing_behind(db):
    with db.session() as session:
        consent.forget_contact(session, str(uuid.uuid4()), None)
    assert row_counts(db, *TABLES) == dict.fromkeys(TABLES, 0)


# --- the ranks of suppressions --------------------------------------------------------------


def test_a_stronger_reason_replaces_a_weaker_one_never_the_reverse(db):
    origin = Origin("api")
    steps = [
        ("manual", True, "manual"),
        ("unsubscribed", True, "unsubscribed"),
        ("manual", False, "unsubscribed"),
        ("bounced", True, "bounced"),
        ("complained", False, "bounced"),
        ("erased", True, "erased"),
        ("unsubscribed", False, "erased"),
    ]
    for reason, changed, held in steps:
        with db.session() as session:
            assert suppressions.suppress(session, "Ada@Example.com", reason, origin) is changed
        [row] = suppression_rows(db)
        assert row.reason == held
    assert row.email is None
    assert [line.reason for line in ledger(db)] == ["manual", "unsubscribed", "bounced"]


# --- what campaigns leave out ---------------------------------------------------------------


def reachable(db: Any, list_id: str | None = None, *, opt_in: bool = False) -> set[str]:
    """The emails of replica contacts a campaign to `list_id` would reach."""
    if opt_in:
        keep = consent.subscribed_condition(Contact.id, list_id)
        keep = sa.and_(keep, ~suppressions.suppressed_condition(Contact.email_key))
    else:
        keep = ~consent.unsubscribed_or_suppressed_condition(Contact.id, Contact.email_key, list_id)
    with db.session() as session:
        return set(session.scalars(sa.select(Contact.email_key).where(keep)))


def test_campaign_conditions_leave_out_the_unsubscribed_and_the_suppressed(client, db):
    news = add_list(db, "News")
    ada, grace = add_contact(db, "ada@example.com"), add_contact(db, "grace@example.com")
    add_contact(db, "alan@example.com")  # no row for the list
    add_contact(db, "bounced@example.com")
    subscribe(client, ada, news)
    client.post(
        SUBSCRIPTIONS, json={"contact_id": grace, "list_id": news, "status": "unsubscribed"}
    )
    client.post("/api/v1/suppressions", json={"email": "Bounced@Example.com"})
    assert reachable(db, news) == {"ada@example.com", "alan@example.com"}
    assert reachable(db) == {"ada@example.com", "grace@example.com", "alan@example.com"}
    assert reachable(db, news, opt_in=True) == {"ada@example.com"}
    letters = add_list(db, "Letters", double_opt_in=True)
    subscribe(client, ada, letters)  # pending: not reached until confirmed
    assert reachable(db, letters, opt_in=True) == set()
    assert "ada@example.com" not in reachable(db, letters)


# --- through the real broker ----------------------------------------------------------------


@pytest.fixture
def running_worker(make_settings, database_url):
    settings = make_settings("marketing", database_url=database_url)
    database = make_database(settings)
    database.create_all()
    with consuming_worker(settings, database, consent.handlers(settings)):
        yield settings, database
    database.dispose()


def test_bounces_from_the_broker_are_applied_and_poison_is_dead_lettered(running_worker):
    settings, database = running_worker
    poison = make_event("email.bounced", {"hard": True, "message_id": "x"}, "notifications")
    publish_raw(settings, "email.bounced", poison.to_json())
    publish_raw(settings, "email.bounced", b"{not json")
    good = bounce("ada@example.com")
    publish_raw(settings, "email.bounced", good.to_json())
    publish_raw(settings, "email.bounced", good.to_json())  # redelivered: applied once
    publish_raw(settings, "email.bounced", bounce("marker@example.com").to_json())
    wait_until(lambda: len(suppression_rows(database)) == 2, 15, "for the suppressions")
    wait_until(lambda: len(list_dead_letters(settings)) == 2, 15, "for the dead letters")
    letters = list_dead_letters(settings)
    assert sorted(letter.reason for letter in letters) == ["malformed", "permanent"]
    [permanent] = [letter for letter in letters if letter.reason == "permanent"]
    assert json.loads(permanent.body)["id"] == poison.id and "address" in permanent.error
    held = sorted((row.email, row.reason) for row in suppression_rows(database))
    assert held == [("ada@example.com", "bounced"), ("marker@example.com", "bounced")]
    assert len(ledger(database)) == 2
