"""Campaign statistics: notifications' email.* events counted once per recipient however
often delivered, unsubscribes attributed to the campaign that caused them, malformed events
refused, and the whole loop through the real broker."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pika
import pytest
import sqlalchemy as sa

from services.marketing import campaign_stats, campaigns
from services.marketing.app import make_database
from services.marketing.handlers import handlers
from services.marketing.jobs import timers
from services.marketing.models import Contact, SubscriptionList
from services.marketing.subscriptions import DEFAULT_LIST
from services.marketing.tests.campaign_helpers import (
    CAMPAIGNS,
    CONTENT,
    add_contacts,
    fan_out,
    launch,
    new_campaign,
    recipients,
    requests,
    static_segment,
)
from services.marketing.tests.consent_helpers import add_list, subscribe
from shared.bus import PermanentError
from shared.deadletters import list_dead_letters, publish_raw
from shared.events import utcnow
from shared.testing import consuming_worker, handle_event, make_event, outbox_envelopes, wait_until


@pytest.fixture
def settings(app: Any) -> Any:
    return app.extensions["crm.settings"]


@pytest.fixture
def apply(db: Any, settings: Any) -> Any:
    """Apply an event with every marketing handler of its type, as the consumer does."""
    service_handlers = handlers(settings)
    return lambda event: handle_event(db, service_handlers, event)


def sent_campaign(client: Any, db: Any, settings: Any, people: list[str], **fields: Any) -> Any:
    """A campaign fanned out to `people`: its id and its requests by contact id."""
    campaign = new_campaign(client, static_segment(db, people, fields.pop("segment", "All")))
    if fields:
        client.patch(f"{CAMPAIGNS}/{campaign['id']}", json=fields)
    launch(client, campaign["id"])
    fan_out(db, settings)
    mails = {m["contact_id"]: m for m in requests(db) if m["campaign_id"] == campaign["id"]}
    return campaign["id"], mails


def outcome(event_type: str, mail: dict[str, Any], **fields: Any) -> Any:
    """An email.* event as notifications publishes it about a campaign's message."""
    data = {
        "message_id": mail["message_id"],
        "to": mail["to"],
        "contact_id": mail["contact_id"],
        "campaign_id": mail["campaign_id"],
        "template_id": None,
        "category": "marketing",
        "status": event_type.split(".")[1],
        "attempts": 1,
        "cause": None,
        **fields,
    }
    return make_event(event_type, data, "notifications", aggregate_id=mail["message_id"])


def stats(client: Any, campaign_id: str) -> dict[str, Any]:
    return client.get(f"{CAMPAIGNS}/{campaign_id}").get_json()["stats"]


def test_stats_follow_sent_opened_clicked_bounced_and_failed(client, db, settings, apply):
    people = add_contacts(db, 4)
    campaign_id, mails = sent_campaign(client, db, settings, people)
    a, b, c, d = (mails[person] for person in people)
    for event in (
        outcome("email.sent", a),
        outcome("email.opened", a),
        outcome("email.clicked", a, url="https://shop.example/sale"),
        outcome("email.sent", b),
        outcome("email.opened", b),
        outcome("email.bounced", c, hard=True, error="550 no such user", code=550),
        outcome("email.failed", d, reason="rejected", error="554 refused"),
    ):
        apply(event)
    assert stats(client, campaign_id) == {
        "recipients": 4,
        "requested": 4,
        "sent": 2,
        "opened": 2,
        "clicked": 1,
        "bounced": 1,
        "failed": 1,
        "unsubscribed": 0,
        "open_rate": 1.0,
        "click_rate": 0.5,
        "bounce_rate": 0.25,
        "unsubscribe_rate": 0.0,
    }
    rows = recipients(db, campaign_id)
    assert [rows[person].status for person in people] == ["sent", "sent", "bounced", "failed"]
    assert (
        rows[people[0]].opened_at and rows[people[0]].clicked_at and not rows[people[1]].clicked_at
    )


def test_a_redelivered_event_a_second_open_and_many_clicks_count_once(client, db, settings, apply):
    people = add_contacts(db, 2)
    campaign_id, mails = sent_campaign(client, db, settings, people)
    mail = mails[people[0]]
    sent, opened = outcome("email.sent", mail), outcome("email.opened", mail)
    for event in (sent, sent, opened, opened, outcome("email.opened", mail)):
        apply(event)
    for url in ("https://a.example", "https://b.example", "https://a.example"):
        apply(outcome("email.clicked", mail, url=url))
    counted = stats(client, campaign_id)
    assert (counted["sent"], counted["opened"], counted["clicked"]) == (1, 1, 1)
    assert (counted["open_rate"], counted["click_rate"]) == (1.0, 1.0)


def test_an_open_before_its_sent_event_counts_the_delivery_once(client, db, settings, apply):
    people = add_contacts(db, 1)
    campaign_id, mails = sent_campaign(client, db, settings, people)
    apply(outcome("email.opened", mails[people[0]]))
    apply(outcome("email.sent", mails[people[0]]))
    counted = stats(client, campaign_id)
    assert (counted["sent"], counted["opened"]) == (1, 1)
    assert recipients(db, campaign_id)[people[0]].status == "sent"


def test_a_bounce_after_sent_wins_and_a_late_sent_does_not_undo_it(client, db, settings, apply):
    people = add_contacts(db, 1)
    campaign_id, mails = sent_campaign(client, db, settings, people)
    mail = mails[people[0]]
    apply(outcome("email.bounced", mail, hard=False))
    apply(outcome("email.sent", mail))
    assert recipients(db, campaign_id)[people[0]].status == "bounced"
    assert (stats(client, campaign_id)["sent"], stats(client, campaign_id)["bounced"]) == (1, 1)


def test_events_of_other_mail_unknown_campaigns_or_strangers_change_nothing(
    client, db, settings, apply
):
    people = add_contacts(db, 2)
    campaign_id, mails = sent_campaign(client, db, settings, people)
    mail = mails[people[0]]
    stranger = add_contacts(db, 1, "stranger")[0]
    for event in (
        outcome("email.sent", {**mail, "campaign_id": None}),
        outcome("email.sent", {**mail, "campaign_id": "0e7c3d4a-0000-4000-8000-000000000000"}),
        outcome("email.opened", {**mail, "contact_id": stranger, "message_id": str(uuid.uuid4())}),
        outcome("email.opened", {**mail, "contact_id": stranger}),
    ):
        apply(event)
    assert stats(client, campaign_id)["sent"] == stats(client, campaign_id)["opened"] == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"campaign_id": "not-a-uuid"},
        {"campaign_id": 7},
        {"message_id": "nope"},
        {"contact_id": ["x"]},
    ],
)
def test_malformed_campaign_events_are_permanent_errors(db, settings, fields):
    mail = {
        "message_id": "3a1f1e2c-7d6b-4f5e-9a8b-1c2d3e4f5a6b",
        "to": "a@example.com",
        "contact_id": "5b2e7c1d-0f3a-4b6c-8d9e-1a2b3c4d5e6f",
        "campaign_id": "0e7c3d4a-1111-4000-8000-000000000000",
    }
    event = outcome("email.opened", {**mail, **fields})
    with pytest.raises(PermanentError):
        handle_event(db, campaign_stats.handlers(settings), event)


def test_events_naming_a_merged_or_erased_contact_find_the_recipient(client, db, settings, apply):
    people = add_contacts(db, 2)
    survivor = add_contacts(db, 1, "survivor")[0]
    campaign_id, mails = sent_campaign(client, db, settings, people)
    with db.session() as session:
        session.execute(
            sa.update(Contact).where(Contact.id == people[0]).values(merged_into=survivor)
        )
        session.execute(sa.update(Contact).where(Contact.id == people[1]).values(erased=True))
    apply(outcome("email.opened", {**mails[people[0]], "contact_id": survivor}))
    apply(outcome("email.opened", {**mails[people[1]], "contact_id": None, "to": ""}))
    assert stats(client, campaign_id)["opened"] == 2
    rows = recipients(db, campaign_id)
    assert rows[people[0]].opened_at and rows[people[1]].opened_at


# --- unsubscribes ---------------------------------------------------------------------------


def test_an_unsubscribe_by_the_mails_link_counts_once_for_the_latest_campaign(
    app, client, db, settings, apply
):
    people = add_contacts(db, 3)
    older, _ = sent_campaign(client, db, settings, people)
    latest, mails = sent_campaign(client, db, settings, people, segment="Again")
    link = mails[people[0]]["headers"]["List-Unsubscribe"].strip("<>")
    path = link[link.index("/api/v1/") :]
    assert app.test_client().post(path).status_code == 200
    assert app.test_client().post(path, data={"scope": "all"}).status_code == 200
    changes = outbox_envelopes(db, "subscription.changed")
    assert len(changes) == 2  # the default list, then every list
    for envelope in changes * 2:  # and each delivered twice
        apply(make_event(envelope["type"], envelope["data"], "marketing", id=envelope["id"]))
    assert stats(client, latest)["unsubscribed"] == 1
    assert stats(client, latest)["unsubscribe_rate"] == 0.0  # nothing delivered yet
    assert stats(client, older)["unsubscribed"] == 0


def unsubscribed(contact_id: str, list_id: str | None, **fields: Any) -> Any:
    data = {
        "contact_id": contact_id,
        "list_id": list_id,
        "status": "unsubscribed",
        "previous_status": "subscribed",
        "source": "unsubscribe_link",
        "all_lists": list_id is None,
        **fields,
    }
    return make_event("subscription.changed", data, "marketing")


def test_unsubscribes_by_bounce_too_late_or_from_another_list_are_not_counted(
    client, db, settings, apply
):
    news, other = add_list(db, "News"), add_list(db, "Other")
    people = add_contacts(db, 3)
    for person in people:
        subscribe(client, person, news)
    campaign_id, _ = sent_campaign(client, db, settings, people, list_id=news)
    late = make_event(
        "subscription.changed",
        unsubscribed(people[0], news).data,
        "marketing",
        occurred_at=utcnow() + timedelta(days=31),
    )
    for event in (
        unsubscribed(people[0], news, source="bounce"),
        unsubscribed(people[1], other),
        unsubscribed(people[2], news, status="subscribed"),
        late,
    ):
        apply(event)
    assert stats(client, campaign_id)["unsubscribed"] == 0
    apply(unsubscribed(people[1], news))
    assert stats(client, campaign_id)["unsubscribed"] == 1


def test_an_unsubscribe_without_a_contact_id_is_a_permanent_error(db, settings):
    with pytest.raises(PermanentError):
        handle_event(db, campaign_stats.handlers(settings), unsubscribed("nope", None))


def test_a_default_list_unsubscribe_matches_campaigns_sent_without_a_list(
    client, db, settings, apply
):
    people = add_contacts(db, 1)
    campaign_id, _ = sent_campaign(client, db, settings, people)
    with db.session() as session:
        default = session.scalar(
            sa.select(SubscriptionList.id).where(SubscriptionList.name == DEFAULT_LIST)
        )
    apply(unsubscribed(people[0], default, source="api"))
    assert stats(client, campaign_id)["unsubscribed"] == 1


# --- through the real broker ----------------------------------------------------------------


@pytest.fixture
def running_worker(make_settings, database_url):
    probe = make_settings("marketing", database_url=database_url)
    settings = probe.with_overrides(extra={**probe.extra, "campaign_tick_seconds": 0.1})
    database = make_database(settings)
    database.create_all()
    with consuming_worker(
        settings, database, handlers(settings), timers=timers(settings, database)
    ):
        yield settings, database
    database.dispose()


def listen_for_requests(settings: Any) -> tuple[Any, Any, str]:
    """A queue of the test's own bound to `email.requested` (deleted with its connection)."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    channel.exchange_declare(settings.exchange, exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, settings.exchange, "email.requested")
    return connection, channel, queue


def test_through_the_broker_requests_go_out_stats_move_and_poison_is_dead_lettered(
    running_worker,
):
    settings, database = running_worker
    connection, channel, queue = listen_for_requests(settings)
    try:
        people = add_contacts(database, 30)
        segment = static_segment(database, people)
        with database.session() as session:
            made = campaigns.create_campaign(
                session, {"name": "Spring", "segment_id": segment, **CONTENT}
            )
            campaigns.launch_campaign(session, made)
        arrived: list[dict[str, Any]] = []

        def take() -> bool:
            method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if method is not None:
                arrived.append(json.loads(body)["data"])
            return len(arrived) == 30

        wait_until(take, 30, "for 30 email requests from the broker")
        assert sorted(data["contact_id"] for data in arrived) == sorted(people)
        opened = outcome("email.opened", arrived[0])
        for mail in arrived:
            publish_raw(settings, "email.sent", outcome("email.sent", mail).to_json())
        publish_raw(settings, "email.opened", opened.to_json())
        publish_raw(settings, "email.opened", opened.to_json())  # redelivered
        poison = outcome("email.opened", {**arrived[1], "campaign_id": "nope"})
        publish_raw(settings, "email.opened", poison.to_json())

        def counted() -> bool:
            with database.session() as session:
                row = campaigns.get_campaign(session, made.id)
                return (row.status, row.sent_count, row.opened_count) == ("sent", 30, 1)

        wait_until(counted, 30, "for the stats to move")
        wait_until(lambda: len(list_dead_letters(settings)) == 1, 30, "for the dead letter")
        [letter] = list_dead_letters(settings)
        assert letter.reason == "permanent" and json.loads(letter.body)["id"] == poison.id
    finally:
        connection.close()
