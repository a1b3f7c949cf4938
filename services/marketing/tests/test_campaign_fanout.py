"""The fan-out: who receives a campaign (once each, however often launched, fanned out or
raced), resuming after an interruption, scheduled launches, cancelling midway."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from services.marketing import campaign_fanout, suppressions
from services.marketing.app import make_database
from services.marketing.campaign_fanout import claim_campaign, launch_due
from services.marketing.campaigns import message_id_for
from services.marketing.jobs import timers
from services.marketing.ledger import Origin
from services.marketing.models import Campaign, Contact, Suppression
from services.marketing.tests.campaign_helpers import (
    CAMPAIGNS,
    add_contact,
    add_contacts,
    campaign_row,
    fan_out,
    launch,
    new_campaign,
    recipients,
    requests,
    static_segment,
)
from services.marketing.tests.consent_helpers import SUBSCRIPTIONS, add_list, subscribe
from shared.events import utcnow
from shared.testing import outbox_events, wait_until


@pytest.fixture
def settings(app: Any) -> Any:
    return app.extensions["crm.settings"]


def erase_address(db: Any, contact_id: str) -> None:
    """Keep only the hash of a contact's address suppressed (as an erasure leaves it), while
    the replica still has the address (its contact.erased not applied yet)."""
    with db.session() as session:
        email = session.get(Contact, contact_id).email
        suppressions.suppress(session, email, suppressions.ERASED, Origin("erasure"))
        assert session.get(Suppression, suppressions.email_hash(email)).email is None


def test_launch_answers_at_once_and_the_worker_requests_one_email_per_eligible_member(
    client, db, settings
):
    ada = add_contact(db, "Ada@Example.com", last_name="Lovelace")
    grace = add_contact(db, "grace@example.com")
    alan = add_contact(db, "alan@example.com")
    no_email = add_contact(db, None)
    erased = add_contact(db, "gone@example.com")
    others = add_contacts(db, 5)
    segment = static_segment(db, [ada, grace, alan, no_email, erased, *others])
    client.post("/api/v1/suppressions", json={"email": "GRACE@example.com"})
    client.post(SUBSCRIPTIONS, json={"contact_id": alan, "status": "unsubscribed"})
    erase_address(db, erased)
    campaign = new_campaign(client, segment, body_html="<html><body><p>Hi</p></body></html>")

    answer = launch(client, campaign["id"])
    assert answer.status_code == 202 and answer.get_json()["status"] == "sending"
    assert requests(db) == []  # the request only marked it: the worker fans out

    assert fan_out(db, settings, chunk_size=3) == 6
    sent = {data["contact_id"]: data for data in requests(db)}
    assert set(sent) == {ada, *others}
    mail = sent[ada]
    assert mail["to"] == "Ada@Example.com" and mail["category"] == "marketing"
    assert mail["campaign_id"] == campaign["id"] and mail["subject"] == "Spring sale"
    assert mail["message_id"] == str(uuid.uuid5(uuid.UUID(campaign["id"]), ada))
    link = mail["headers"]["List-Unsubscribe"].strip("<>")
    assert "/api/v1/unsubscribe/" in link
    assert link in mail["body_text"] and "All at half price." in mail["body_text"]
    assert (
        mail["body_html"].endswith("</p></body></html>") and "Unsubscribe</a>" in mail["body_html"]
    )
    rows = recipients(db, campaign["id"])
    assert rows[erased].status == "skipped" and rows[ada].status == "requested"
    assert {grace, alan, no_email}.isdisjoint(rows)
    body = client.get(f"{CAMPAIGNS}/{campaign['id']}").get_json()
    assert body["status"] == "sent" and body["sent_at"] is not None
    assert (body["stats"]["recipients"], body["stats"]["requested"]) == (6, 6)
    [(_, launched)] = outbox_events(db, "campaign.launched")
    [(_, done)] = outbox_events(db, "campaign.sent")
    assert launched["recipients"] == 7 and done["requested"] == 6


def test_a_list_campaign_reaches_only_members_subscribed_to_the_list(client, db, settings):
    news = add_list(db, "News")
    ada, grace, alan = (add_contact(db, f"{name}@example.com") for name in ("ada", "grace", "alan"))
    subscribe(client, ada, news)
    subscribe(client, grace, news)
    client.post(
        SUBSCRIPTIONS, json={"contact_id": grace, "list_id": news, "status": "unsubscribed"}
    )
    campaign = new_campaign(client, static_segment(db, [ada, grace, alan]), list_id=news)
    launch(client, campaign["id"])
    fan_out(db, settings)
    [mail] = requests(db)
    assert mail["contact_id"] == ada


def test_a_template_campaign_passes_the_contact_and_the_unsubscribe_link(client, db, settings):
    ada = add_contact(db, "ada@example.com", last_name="Lovelace")
    content = {"subject": None, "body_text": None, "template": "spring-sale"}
    campaign = new_campaign(
        client, static_segment(db, [ada]), sender="Shop <news@shop.example>", **content
    )
    launch(client, campaign["id"])
    fan_out(db, settings)
    [mail] = requests(db)
    assert mail["template"] == "spring-sale" and "subject" not in mail
    assert mail["from_address"] == "Shop <news@shop.example>"
    variables = mail["variables"]
    assert variables["contact"] == {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
    }
    assert mail["headers"]["List-Unsubscribe"] == f"<{variables['unsubscribe_url']}>"


def test_launching_or_fanning_out_twice_requests_each_recipient_once(client, db, settings):
    people = add_contacts(db, 12)
    campaign = new_campaign(client, static_segment(db, people))
    assert launch(client, campaign["id"]).status_code == 202
    again = launch(client, campaign["id"])
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
    assert fan_out(db, settings, chunk_size=5) == 12
    assert fan_out(db, settings, chunk_size=5) == 0
    assert launch(client, campaign["id"]).status_code == 409
    ids = [data["message_id"] for data in requests(db)]
    assert len(ids) == len(set(ids)) == 12
    assert len(outbox_events(db, "campaign.sent")) == 1


def test_two_workers_at_once_request_each_recipient_once(client, db, settings, database_url):
    people = add_contacts(db, 60)
    campaign = new_campaign(client, static_segment(db, people))
    launch(client, campaign["id"])
    engines = [make_database(settings) for _ in range(2)]  # two engines: two workers
    counts: list[int] = []
    barrier = threading.Barrier(2)

    def work(database: Any) -> None:
        barrier.wait()
        counts.append(campaign_fanout.run_campaigns(database, settings, chunk_size=4))

    threads = [threading.Thread(target=work, args=(database,)) for database in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for database in engines:
        database.dispose()
    assert sum(counts) == 60
    ids = [data["contact_id"] for data in requests(db)]
    assert sorted(ids) == sorted(people)
    assert campaign_row(db, campaign["id"]).status == "sent"


def test_a_claimed_campaign_is_not_claimed_again_until_its_lease_runs_out(client, db):
    campaign = new_campaign(client, static_segment(db, add_contacts(db, 2)))
    launch(client, campaign["id"])
    first = claim_campaign(db, lease_seconds=60)
    assert first is not None and first.campaign_id == campaign["id"]
    assert claim_campaign(db) is None
    with db.session() as session:
        session.get(Campaign, campaign["id"]).claimed_until = utcnow() - timedelta(seconds=1)
    second = claim_campaign(db)
    assert second is not None and second.token != first.token


def test_an_interrupted_fan_out_goes_on_where_it_stopped(client, db, settings, monkeypatch):
    people = add_contacts(db, 45)
    campaign = new_campaign(client, static_segment(db, people))
    launch(client, campaign["id"])
    real, calls = campaign_fanout.record_events, []

    def dies_on_third_chunk(session: Any, rows: list[Any]) -> None:
        calls.append(len(rows))
        if len(calls) == 3:
            raise RuntimeError("worker killed")
        real(session, rows)

    monkeypatch.setattr(campaign_fanout, "record_events", dies_on_third_chunk)
    with pytest.raises(RuntimeError):
        fan_out(db, settings, chunk_size=10, lease_seconds=60)  # held till expired below
    monkeypatch.setattr(campaign_fanout, "record_events", real)
    assert len(requests(db)) == 20  # two chunks committed, the third rolled back
    assert campaign_row(db, campaign["id"]).status == "sending"
    assert fan_out(db, settings, chunk_size=10) == 0  # the dead worker's lease still holds
    with db.session() as session:  # ... until it runs out
        session.get(Campaign, campaign["id"]).claimed_until = utcnow() - timedelta(seconds=1)
    assert fan_out(db, settings, chunk_size=10) == 25
    ids = [data["contact_id"] for data in requests(db)]
    assert sorted(ids) == sorted(people)
    assert len(outbox_events(db, "campaign.launched")) == 1


def test_a_scheduled_campaign_is_launched_by_the_timer_at_its_time_and_not_before(
    client, db, settings
):
    campaign = new_campaign(client, static_segment(db, add_contacts(db, 3)))
    at = utcnow() + timedelta(seconds=1.5)
    answer = launch(client, campaign["id"], scheduled_at=at.isoformat())
    assert answer.status_code == 202 and answer.get_json()["status"] == "scheduled"
    [timer] = [timer for timer in timers(settings, db) if timer.name == "campaigns"]
    timer.action()
    assert requests(db) == [] and campaign_row(db, campaign["id"]).status == "scheduled"
    assert launch_due(db, now=at - timedelta(milliseconds=1)) == 0  # a moment early: no

    def tick() -> bool:
        timer.action()
        return len(requests(db)) == 3

    wait_until(tick, 15, "for the timer to launch the campaign")
    row = campaign_row(db, campaign["id"])
    launched = row.launched_at
    launched = launched if launched.tzinfo else launched.replace(tzinfo=UTC)  # SQLite: naive
    assert row.status == "sent" and launched >= at


def test_cancelling_stops_a_scheduled_campaign_and_the_rest_of_a_sending_one(client, db, settings):
    scheduled = new_campaign(client, static_segment(db, add_contacts(db, 2, "a")))
    later = (utcnow() + timedelta(minutes=5)).isoformat()
    launch(client, scheduled["id"], scheduled_at=later)
    assert client.post(f"{CAMPAIGNS}/{scheduled['id']}/cancel").get_json()["status"] == "cancelled"
    assert launch_due(db, now=utcnow() + timedelta(hours=1)) == 0

    sending = new_campaign(client, static_segment(db, add_contacts(db, 10, "b"), "B"))
    launch(client, sending["id"])
    claim = claim_campaign(db)
    campaign_fanout.fan_out(db, settings, claim, chunk_size=4, deadline=0)  # one chunk
    assert client.post(f"{CAMPAIGNS}/{sending['id']}/cancel").status_code == 200
    assert fan_out(db, settings) == 0
    statuses = sorted(row.status for row in recipients(db, sending["id"]).values())
    assert statuses == ["cancelled"] * 6 + ["requested"] * 4
    assert client.post(f"{CAMPAIGNS}/{sending['id']}/cancel").status_code == 409


def test_a_contact_erased_or_unsubscribed_after_the_freeze_is_skipped(client, db, settings):
    ada, grace, alan = (add_contact(db, f"{name}@example.com") for name in ("ada", "grace", "alan"))
    campaign = new_campaign(client, static_segment(db, [ada, grace, alan]))
    launch(client, campaign["id"])
    claim = claim_campaign(db)
    with db.session() as session:  # the recipients are frozen, nobody requested yet
        campaign_fanout.freeze_recipients(session, campaign_fanout.renew(session, claim, 60))
    client.post("/api/v1/suppressions", json={"email": "grace@example.com"})
    with db.session() as session:
        session.execute(sa.update(Contact).where(Contact.id == alan).values(erased=True))
    assert campaign_fanout.fan_out(db, settings, claim) == 1
    [mail] = requests(db)
    assert mail["contact_id"] == ada
    rows = recipients(db, campaign["id"])
    assert (rows[grace].status, rows[alan].status) == ("skipped", "skipped")
    body = client.get(f"{CAMPAIGNS}/{campaign['id']}").get_json()
    assert (body["stats"]["recipients"], body["stats"]["requested"]) == (1, 1)


def test_a_campaign_whose_segment_was_deleted_is_cancelled_by_the_worker(client, db, settings):
    segment = static_segment(db, add_contacts(db, 2))
    campaign = new_campaign(client, segment)
    launch(client, campaign["id"])
    assert client.delete(f"/api/v1/segments/{segment}").status_code == 204
    assert fan_out(db, settings) == 0
    assert campaign_row(db, campaign["id"]).status == "cancelled"


def test_recipients_are_listed_with_their_message_ids(client, db, settings):
    people = add_contacts(db, 5)
    campaign = new_campaign(client, static_segment(db, people))
    launch(client, campaign["id"])
    fan_out(db, settings)
    url = f"{CAMPAIGNS}/{campaign['id']}/recipients"
    first = client.get(f"{url}?limit=3").get_json()
    second = client.get(f"{url}?limit=3&cursor={first['next_cursor']}").get_json()
    items = first["items"] + second["items"]
    assert second["next_cursor"] is None
    assert sorted(item["contact_id"] for item in items) == sorted(people)
    item = items[0]
    assert item["message_id"] == message_id_for(campaign["id"], item["contact_id"])
    assert item["status"] == "requested" and item["email"].endswith("@example.com")
    assert client.get(f"{url}?status=skipped").get_json()["items"] == []
    assert client.get(f"{url}?status=nope").status_code == 422
