"""The campaigns API: drafts, their changes and deletion, launching and cancelling, bad input
on every write route (422, nothing changed), and who may do what."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from services.marketing.tests.campaign_helpers import (
    CAMPAIGNS,
    add_contacts,
    launch,
    new_campaign,
    static_segment,
)
from services.marketing.tests.conftest import row_counts, token_for
from services.marketing.tests.consent_helpers import PROBLEM, add_list
from shared.events import utcnow

TABLES = ("campaigns", "campaign_recipients", "outbox")


@pytest.fixture
def segment(db) -> str:
    return static_segment(db, add_contacts(db, 3))


def test_a_draft_is_created_read_listed_changed_and_deleted(client, segment):
    made = client.post(
        CAMPAIGNS, json={"name": "Spring sale", "segment_id": segment, "subject": "Sale!"}
    )
    assert made.status_code == 201 and made.headers["ETag"] == '"1"'
    body = made.get_json()
    assert made.headers["Location"] == f"{CAMPAIGNS}/{body['id']}"
    assert body["status"] == "draft" and body["list_id"] is None and body["template"] is None
    assert body["stats"] == {
        "recipients": 0,
        "requested": 0,
        "sent": 0,
        "opened": 0,
        "clicked": 0,
        "bounced": 0,
        "failed": 0,
        "unsubscribed": 0,
        "open_rate": 0.0,
        "click_rate": 0.0,
        "bounce_rate": 0.0,
        "unsubscribe_rate": 0.0,
    }
    url = f"{CAMPAIGNS}/{body['id']}"
    got = client.get(url)
    assert got.headers["ETag"] == '"1"' and got.get_json() == body
    changed = client.patch(url, json={"body_text": "Half price."}, headers={"If-Match": '"1"'})
    assert changed.status_code == 200 and changed.get_json()["version"] == 2
    stale = client.patch(url, json={"name": "Other"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 409 and client.get(url).get_json()["name"] == "Spring sale"
    listed = client.get(f"{CAMPAIGNS}?status=draft").get_json()
    assert [item["id"] for item in listed["items"]] == [body["id"]]
    assert client.get(f"{CAMPAIGNS}?status=sent").get_json()["items"] == []
    assert client.delete(url, headers={"If-Match": "two"}).status_code == 400
    assert client.delete(url, headers={"If-Match": '"1"'}).status_code == 409
    assert client.delete(url, headers={"If-Match": '"2"'}).status_code == 204
    assert client.get(url).status_code == 404


def test_the_list_is_paged_newest_first(client, segment):
    ids = [new_campaign(client, segment, name=f"C{n}")["id"] for n in range(5)]
    first = client.get(f"{CAMPAIGNS}?limit=3").get_json()
    second = client.get(f"{CAMPAIGNS}?limit=3&cursor={first['next_cursor']}").get_json()
    assert [item["id"] for item in first["items"] + second["items"]] == ids[::-1]
    assert second["next_cursor"] is None
    by_name = client.get(f"{CAMPAIGNS}?sort=name&q=C3").get_json()["items"]
    assert [item["name"] for item in by_name] == ["C3"]


def test_launch_is_202_now_or_scheduled_and_409_once_launched(client, db, segment):
    now_one = new_campaign(client, segment)
    answer = launch(client, now_one["id"])
    assert answer.status_code == 202
    assert answer.get_json()["status"] == "sending" and answer.get_json()["launched_at"]
    url = f"{CAMPAIGNS}/{now_one['id']}"
    assert client.patch(url, json={"name": "Late"}).status_code == 409
    assert client.delete(url).status_code == 409
    assert launch(client, now_one["id"]).status_code == 409

    later = new_campaign(client, segment)
    at = (utcnow() + timedelta(days=1)).replace(microsecond=0)
    scheduled = launch(client, later["id"], scheduled_at=at.isoformat())
    assert scheduled.status_code == 202
    assert scheduled.get_json()["status"] == "scheduled"
    assert scheduled.get_json()["scheduled_at"] == at.isoformat().replace("+00:00", "Z")
    patched = client.patch(f"{CAMPAIGNS}/{later['id']}", json={"subject": "Still on time"})
    assert patched.status_code == 200 and patched.get_json()["status"] == "scheduled"
    assert launch(client, later["id"]).get_json()["status"] == "sending"  # now, after all


def test_a_repeated_launch_with_the_same_idempotency_key_gets_the_first_answer(client, segment):
    campaign = new_campaign(client, segment)
    headers = {"Idempotency-Key": "launch-1"}
    first = client.post(f"{CAMPAIGNS}/{campaign['id']}/launch", headers=headers)
    again = client.post(f"{CAMPAIGNS}/{campaign['id']}/launch", headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()


def test_cancel_takes_a_scheduled_campaign_only_once(client, segment):
    campaign = new_campaign(client, segment)
    url = f"{CAMPAIGNS}/{campaign['id']}"
    assert client.post(f"{url}/cancel").status_code == 409  # a draft is deleted instead
    launch(client, campaign["id"], scheduled_at=(utcnow() + timedelta(hours=2)).isoformat())
    cancelled = client.post(f"{url}/cancel")
    assert cancelled.status_code == 200 and cancelled.get_json()["cancelled_at"]
    assert client.post(f"{url}/cancel").status_code == 409
    assert launch(client, campaign["id"]).status_code == 409


BAD_CREATES = [
    ({}, ("name", "segment_id")),
    ({"name": " ", "segment_id": "S"}, ("name",)),
    ({"name": "x", "segment_id": "not-a-uuid"}, ("segment_id",)),
    ({"name": "x", "segment_id": str(uuid.uuid4())}, ("segment_id",)),
    ({"name": "x", "segment_id": "S", "list_id": str(uuid.uuid4())}, ("list_id",)),
    ({"name": "x", "segment_id": "S", "status": "sent"}, ("status",)),
    ({"name": "x", "segment_id": "S", "stats": {"opened": 9}}, ("stats",)),
    ({"name": "x", "segment_id": "S", "subject": "a\nb"}, ("subject",)),
    ({"name": "x", "segment_id": "S", "subject": "s", "template": "t"}, ("template",)),
    ({"name": "x", "segment_id": "S", "sender": "not an address"}, ("sender",)),
    ({"name": "x", "segment_id": "S", "body_text": 5}, ("body_text",)),
    ({"name": "x" * 201, "segment_id": "S"}, ("name",)),
    ({"name": "x\x00", "segment_id": "S"}, ("name",)),
]


@pytest.mark.parametrize(("body", "fields"), BAD_CREATES)
def test_bad_input_to_create_is_422_naming_the_field(client, db, segment, body, fields):
    body = {key: segment if value == "S" else value for key, value in body.items()}
    before = row_counts(db, *TABLES)
    answer = client.post(CAMPAIGNS, json=body)
    assert answer.status_code == 422 and answer.mimetype == PROBLEM
    assert set(fields) <= set(answer.get_json()["errors"])
    assert row_counts(db, *TABLES) == before


def test_bad_input_to_change_launch_and_cancel_is_refused_and_changes_nothing(client, db, segment):
    campaign = new_campaign(client, segment, subject=None, body_text=None)
    url = f"{CAMPAIGNS}/{campaign['id']}"
    refusals = [
        client.patch(url, json={"segment_id": str(uuid.uuid4())}),
        client.patch(url, json={"list_id": "nope"}),
        client.patch(url, json={"template": "t", "body_html": "<p>x</p>"}),
        client.patch(url, json={"status": "sending"}),
        client.patch(url, json={"id": str(uuid.uuid4())}),
        client.post(f"{url}/launch"),  # no content yet
        client.post(f"{url}/launch", json={"scheduled_at": "tomorrow"}),
        client.post(f"{url}/launch", json={"scheduled_at": "2020-01-01T00:00:00"}),
        client.post(f"{url}/launch", json={"when": "now"}),
    ]
    for answer in refusals:
        assert answer.status_code == 422 and answer.mimetype == PROBLEM, answer.get_json()
    client.patch(url, json={"template": "spring"})
    past = (utcnow() - timedelta(minutes=1)).isoformat()
    late = client.post(f"{url}/launch", json={"scheduled_at": past})
    assert late.status_code == 422 and "scheduled_at" in late.get_json()["errors"]
    assert client.post(f"{url}/cancel", json={"why": "x"}).status_code == 422
    assert (
        client.post(f"{url}/launch", data="{", content_type="application/json").status_code == 400
    )
    assert client.patch(url, json=["x"]).status_code == 400
    body = client.get(url).get_json()
    assert body["status"] == "draft" and body["version"] == 2  # only the template was set
    assert row_counts(db, *TABLES)["outbox"] == 0


def test_a_campaign_whose_segment_was_deleted_cannot_be_launched(client, db, segment):
    news = add_list(db, "News")
    campaign = new_campaign(client, segment, list_id=news)
    assert client.delete(f"/api/v1/segments/{segment}").status_code == 204
    answer = launch(client, campaign["id"])
    assert answer.status_code == 422 and "segment_id" in answer.get_json()["errors"]


@pytest.mark.parametrize("role", ["viewer", "sales", "support"])
def test_only_marketing_and_admins_change_campaigns_everyone_reads(app, client, segment, role):
    campaign = new_campaign(client, segment)
    url = f"{CAMPAIGNS}/{campaign['id']}"
    other = app.test_client()
    other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app, role)}"
    assert other.get(url).status_code == 200
    assert other.get(CAMPAIGNS).status_code == 200
    assert other.get(f"{url}/recipients").status_code == 200
    writes = [
        other.post(CAMPAIGNS, json={"name": "x", "segment_id": segment}),
        other.patch(url, json={"name": "y"}),
        other.post(f"{url}/launch"),
        other.post(f"{url}/cancel"),
        other.delete(url),
    ]
    assert [answer.status_code for answer in writes] == [403] * 5
    assert client.get(url).get_json()["status"] == "draft"


def test_marketing_may_launch_and_strangers_are_turned_away(app, segment):
    marketer = app.test_client()
    marketer.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app, 'marketing')}"
    campaign = new_campaign(marketer, segment)
    assert launch(marketer, campaign["id"]).status_code == 202
    stranger = app.test_client()
    assert stranger.get(CAMPAIGNS).status_code == 401
    assert stranger.post(f"{CAMPAIGNS}/{campaign['id']}/cancel").status_code == 401


def test_unknown_campaigns_are_404(client):
    missing = f"{CAMPAIGNS}/{uuid.uuid4()}"
    answers = [
        client.get(missing),
        client.patch(missing, json={"name": "x"}),
        client.delete(missing),
        client.post(f"{missing}/launch"),
        client.post(f"{missing}/cancel"),
        client.get(f"{missing}/recipients"),
    ]
    assert [answer.status_code for answer in answers] == [404] * 6
    assert client.get(f"{CAMPAIGNS}/not-a-uuid").status_code == 404
    assert client.get(f"{CAMPAIGNS}?status=paused").status_code == 422
