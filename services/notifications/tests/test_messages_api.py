"""The messages API: the delivery log, one message, and sending one email now."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notifications.models import Message, Suppression
from services.notifications.tests.conftest import row_counts, token_for

CONTACT = "00000000-0000-4000-8000-0000000000c1"
CAMPAIGN = "00000000-0000-4000-8000-0000000000ca"
NEW = {"to": "ada@example.com", "subject": "Your order", "body_text": "It shipped."}


def add_message(db: Any, minutes: int, **fields: Any) -> str:
    """A message in the log, created `minutes` after a fixed moment."""
    created = datetime(2026, 6, 1, 9, tzinfo=UTC) + timedelta(minutes=minutes)
    to = fields.pop("to", "ada@example.com")
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "to_address": to,
        "to_key": to.lower(),
        "from_address": "CRM <crm@example.com>",
        "subject": f"message {minutes}",
        "body_text": "text",
        "created_at": created,
        "updated_at": created,
    }
    with db.session() as session:
        session.add(Message(**{**values, **fields}))
    return values["id"]


def as_role(app: Any, role: str) -> Any:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app, role)}"
    return client


# --- sending one --------------------------------------------------------------------------


def test_sending_an_email_queues_it_and_answers_202_with_the_message(client):
    response = client.post("/api/v1/messages", json={**NEW, "body_html": "<p>It shipped.</p>"})
    assert response.status_code == 202, response.json
    body = response.json
    assert response.headers["Location"] == f"/api/v1/messages/{body['id']}"
    assert (body["status"], body["to"], body["category"]) == (
        "queued",
        "ada@example.com",
        "transactional",
    )
    assert body["attempts"] == 0 and body["sent_at"] is None and body["from"]
    assert body["body_html"] == "<p>It shipped.</p>" and body["created_at"].endswith("Z")
    shown = client.get(response.headers["Location"])
    assert shown.status_code == 200 and shown.json["body_text"] == "It shipped."


@pytest.mark.parametrize("role", ["support", "sales", "marketing", "admin"])
def test_every_writing_role_may_send(app, role):
    assert as_role(app, role).post("/api/v1/messages", json=NEW).status_code == 202


def test_viewers_and_strangers_may_not_send(app, anonymous, db):
    assert as_role(app, "viewer").post("/api/v1/messages", json=NEW).status_code == 403
    assert anonymous.post("/api/v1/messages", json=NEW).status_code == 401
    assert as_role(app, "viewer").get("/api/v1/messages").status_code == 200
    assert row_counts(db, "messages") == {"messages": 0}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**NEW, "to": "not an address"}, "to"),
        ({**NEW, "to": "ada@example.com\r\nBcc: eve@example.com"}, "to"),
        ({**NEW, "subject": "Hi\r\nBcc: eve@example.com"}, "subject"),
        ({**NEW, "subject": ""}, "subject"),
        ({**NEW, "body_text": None}, "body_text"),
        ({**NEW, "category": "spam"}, "category"),
        ({**NEW, "contact_id": "42"}, "contact_id"),
        ({**NEW, "cc": "eve@example.com"}, "cc"),
        ({**NEW, "body_text": "nul\x00"}, "body_text"),
        ({"to": "ada@example.com"}, "subject"),
    ],
)
def test_bad_input_is_a_422_naming_the_field_and_stores_nothing(client, db, body, field):
    response = client.post("/api/v1/messages", json=body)
    assert response.status_code == 422, response.json
    assert response.mimetype == "application/problem+json" and field in response.json["errors"]
    assert row_counts(db, "messages", "outbox") == {"messages": 0, "outbox": 0}


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]"])
def test_a_body_that_is_not_a_json_object_is_a_400(client, raw):
    response = client.post("/api/v1/messages", data=raw, content_type="application/json")
    assert response.status_code == 400


def test_an_idempotency_key_sends_the_email_once(client, db):
    headers = {"Idempotency-Key": "order-42-shipped"}
    first = client.post("/api/v1/messages", json=NEW, headers=headers)
    again = client.post("/api/v1/messages", json=NEW, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json["id"] == first.json["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert row_counts(db, "messages") == {"messages": 1}


def test_marketing_mail_to_a_suppressed_address_is_answered_as_failed(client, db):
    with db.session() as session:
        session.add(Suppression(email_key="ada@example.com", reason="unsubscribed"))
    response = client.post("/api/v1/messages", json={**NEW, "category": "marketing"})
    assert response.status_code == 202
    assert response.json["status"] == "failed"
    assert response.json["last_error"] == "suppressed: unsubscribed"


# --- the log ------------------------------------------------------------------------------


def test_one_message_shows_its_delivery_and_bodies(client, db):
    message_id = add_message(
        db,
        0,
        status="bounced",
        attempts=1,
        last_error="RCPT TO: 550 5.1.1 user unknown",
        contact_id=CONTACT,
        cause_event_id=str(uuid.uuid4()),
        cause_event_type="email.requested",
        body_html="<p>x</p>",
        headers={"Reply-To": "support@example.com"},
    )
    body = client.get(f"/api/v1/messages/{message_id}").json
    assert set(body) >= {
        "id", "to", "from", "subject", "status", "category", "attempts", "last_error",
        "sent_at", "failed_at", "opened_at", "open_count", "click_count", "contact_id",
        "campaign_id", "cause_event_id", "cause_event_type", "created_at", "updated_at",
        "body_text", "body_html",
    }  # fmt: skip
    assert (body["status"], body["attempts"], body["contact_id"]) == ("bounced", 1, CONTACT)
    assert body["cause_event_type"] == "email.requested"
    assert body["headers"] == {"Reply-To": "support@example.com"}
    assert body["created_at"] == "2026-06-01T09:00:00Z"


@pytest.mark.parametrize(
    "path", ["/api/v1/messages/2b1e4c7a-0000-4000-8000-000000000404", "/api/v1/messages/nope"]
)
def test_an_unknown_message_is_a_404(client, path):
    response = client.get(path)
    assert response.status_code == 404 and response.mimetype == "application/problem+json"


def test_the_log_is_newest_first_in_pages_without_bodies(client, db):
    ids = [add_message(db, minutes) for minutes in range(5)]
    page = client.get("/api/v1/messages?limit=2").json
    assert [item["id"] for item in page["items"]] == [ids[4], ids[3]]
    assert "body_text" not in page["items"][0]
    seen = [item["id"] for item in page["items"]]
    while page["next_cursor"]:
        page = client.get(f"/api/v1/messages?limit=2&cursor={page['next_cursor']}").json
        seen += [item["id"] for item in page["items"]]
    assert seen == ids[::-1]
    oldest_first = client.get("/api/v1/messages?sort=created_at").json["items"]
    assert [item["id"] for item in oldest_first] == ids


def test_the_log_filters_by_status_address_contact_campaign_and_category(client, db):
    sent = add_message(db, 0, status="sent", to="Ada@Example.com", contact_id=CONTACT)
    failed = add_message(db, 1, status="failed", to="grace@example.com")
    campaign = add_message(db, 2, category="marketing", campaign_id=CAMPAIGN)

    def ids(query: str) -> list[str]:
        response = client.get(f"/api/v1/messages?{query}")
        assert response.status_code == 200, response.json
        return [item["id"] for item in response.json["items"]]

    assert ids("status=sent") == [sent]
    assert ids("to=ADA@example.com") == [campaign, sent]
    assert ids(f"contact_id={CONTACT}") == [sent]
    assert ids(f"campaign_id={CAMPAIGN}") == [campaign]
    assert ids("category=marketing") == [campaign]
    assert ids("status=failed&to=grace@example.com") == [failed]
    assert ids("status=bounced") == []


@pytest.mark.parametrize(
    "query",
    [
        "status=lost",
        "category=spam",
        "contact_id=42",
        "campaign_id=x",
        "limit=0",
        "limit=500",
        "cursor=garbage",
        "sort=subject",
        "subject=hi",
        "status=sent&status=failed",
    ],
)
def test_bad_list_parameters_are_a_422(client, query):
    response = client.get(f"/api/v1/messages?{query}")
    assert response.status_code == 422, response.json
