"""The notifications service's part of the subject access export
(services/notifications/subject_export)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.notifications.models import (
    Click,
    ContactAddress,
    Message,
    Reminder,
    Suppression,
    Webhook,
    WebhookDelivery,
)
from services.notifications.subject_export import MAX_TASK_IDS
from services.notifications.tests.conftest import token_for
from shared.db import Database
from shared.events import utcnow

CONTACT_ID = "6f1c2d3e-0000-4000-8000-0000000000f1"
UNCAPPED = 55  # more than a list's default page: the export is never cut


def export_path(contact_id: str, query: str = "") -> str:
    return f"/api/v1/subject-exports/notifications/{contact_id}{query}"


def message(to: str, contact_id: str | None = None, **fields: object) -> Message:
    return Message(
        id=str(uuid.uuid4()),
        to_address=to,
        to_key=to.lower(),
        from_address="crm@example.com",
        subject="Hello",
        body_text="Hi there",
        contact_id=contact_id,
        **fields,
    )


def delivery(webhook_id: str, data: dict[str, object]) -> WebhookDelivery:
    return WebhookDelivery(
        webhook_id=webhook_id,
        event_id=str(uuid.uuid4()),
        event_type="contact.updated",
        payload=json.dumps({"data": data}),
    )


def a_person_and_others(db: Database) -> dict[str, str]:
    """Messages, a click, a suppression, the address and webhook deliveries; ids of some."""
    with db.session() as session:
        session.add(ContactAddress(contact_id=CONTACT_ID, email="Ada@Example.com", name="Ada"))
        for _ in range(UNCAPPED):
            session.add(message("Ada@Example.com", CONTACT_ID, status="sent"))
        by_address = message("ADA.NEW@example.com")  # no contact id: found by address
        clicked = message("ada@example.com", CONTACT_ID, click_count=1)
        session.add_all([by_address, clicked, message("grace@example.com")])
        session.flush()
        session.add(Click(message_id=clicked.id, url="https://example.com/offer"))
        session.add(Suppression(email_key="ada.new@example.com", reason="bounced"))
        webhook = Webhook(url="https://hooks.example.com/", event_types=["*"], secret="s")
        session.add(webhook)
        session.flush()
        naming = delivery(webhook.id, {"id": CONTACT_ID, "email": "Ada@Example.com"})
        session.add_all([naming, delivery(webhook.id, {"id": str(uuid.uuid4())})])
        session.flush()
        return {"by_address": by_address.id, "clicked": clicked.id, "delivery": naming.id}


def test_the_export_holds_messages_suppressions_address_and_deliveries(
    client: FlaskClient, db: Database
) -> None:
    ids = a_person_and_others(db)

    response = client.get(export_path(CONTACT_ID, "?email=ada.new@example.com"))

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["service"] == "notifications" and body["contact_id"] == CONTACT_ID
    assert body["address"]["email"] == "Ada@Example.com"
    messages = {item["id"]: item for item in body["messages"]}
    assert len(messages) == UNCAPPED + 2 and ids["by_address"] in messages
    assert messages[ids["clicked"]]["body_text"] == "Hi there"
    assert [c["url"] for c in messages[ids["clicked"]]["clicks"]] == ["https://example.com/offer"]
    assert [row["email_key"] for row in body["suppressions"]] == ["ada.new@example.com"]
    assert [row["id"] for row in body["webhook_deliveries"]] == [ids["delivery"]]
    assert CONTACT_ID in body["webhook_deliveries"][0]["payload"]


def test_the_reminders_of_the_tasks_named_are_exported(client: FlaskClient, db: Database) -> None:
    tasks = [str(uuid.uuid4()) for _ in range(3)]
    with db.session() as session:
        for task_id in tasks:
            session.add(Reminder(task_id=task_id, title="Call Ada", due_at=utcnow() + timedelta(1)))

    response = client.get(f"{export_path(CONTACT_ID)}/reminders?task_ids={tasks[0]},{tasks[1]}")

    assert response.status_code == 200, response.get_json()
    assert {row["task_id"] for row in response.get_json()["reminders"]} == set(tasks[:2])


def test_too_many_or_malformed_task_ids_are_a_422(client: FlaskClient) -> None:
    too_many = ",".join(str(uuid.uuid4()) for _ in range(MAX_TASK_IDS + 1))

    for query in (f"task_ids={too_many}", "task_ids=1,2", "task_id=x"):
        response = client.get(f"{export_path(CONTACT_ID)}/reminders?{query}")
        assert response.status_code == 422, query


def test_a_person_notifications_knows_nothing_of_gets_empty_sections(client: FlaskClient) -> None:
    body = client.get(export_path(str(uuid.uuid4()))).get_json()

    assert body["address"] is None
    assert body["messages"] == body["suppressions"] == body["webhook_deliveries"] == []


@pytest.mark.parametrize("path", ["/not-an-id", "/not-an-id/reminders"])
def test_a_malformed_id_is_a_400(client: FlaskClient, path: str) -> None:
    response = client.get(f"/api/v1/subject-exports/notifications{path}")

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("role", ["sales", "support", "marketing", "viewer"])
@pytest.mark.parametrize("suffix", ["", "/reminders"])
def test_only_an_admin_may_export_a_person(app: Flask, role: str, suffix: str) -> None:
    headers = {"Authorization": f"Bearer {token_for(app, role)}"}

    response = app.test_client().get(export_path(CONTACT_ID) + suffix, headers=headers)

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
