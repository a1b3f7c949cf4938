"""The sales service's part of the subject access export (services/sales/subject_export)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.sales.tests.conftest import token_for

CONTACT_ID = "6f1c2d3e-0000-4000-8000-0000000000e1"
OTHER_ID = "6f1c2d3e-0000-4000-8000-0000000000e2"
UNCAPPED = 55  # more than a list's default page: the export is never cut


def export_path(contact_id: str, query: str = "") -> str:
    return f"/api/v1/subject-exports/sales/{contact_id}{query}"


def created(client: FlaskClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_the_export_holds_the_persons_leads_deals_and_tasks(client: FlaskClient) -> None:
    lead = created(
        client,
        "/api/v1/leads",
        {"first_name": "Ada", "last_name": "Lovelace", "email": "Ada@Example.com"},
    )
    deal = created(client, "/api/v1/deals", {"name": "Engines", "contact_id": CONTACT_ID})
    for number in range(UNCAPPED):
        created(client, "/api/v1/tasks", {"title": f"Call {number}", "contact_id": CONTACT_ID})
    on_the_deal = created(client, "/api/v1/tasks", {"title": "Quote", "deal_id": deal["id"]})
    created(client, "/api/v1/deals", {"name": "Someone else's", "contact_id": OTHER_ID})

    response = client.get(export_path(CONTACT_ID, "?email=ada@example.com"))

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["service"] == "sales" and body["contact_id"] == CONTACT_ID
    assert [item["id"] for item in body["leads"]] == [lead["id"]]
    assert body["leads"][0]["behaviours"] == []
    assert [item["id"] for item in body["deals"]] == [deal["id"]]
    assert len(body["tasks"]) == UNCAPPED + 1
    assert on_the_deal["id"] in {task["id"] for task in body["tasks"]}


def test_a_person_sales_knows_nothing_of_gets_empty_sections(client: FlaskClient) -> None:
    response = client.get(export_path(str(uuid.uuid4())))

    assert response.status_code == 200
    body = response.get_json()
    assert (body["leads"], body["deals"], body["tasks"]) == ([], [], [])


def test_a_malformed_id_is_a_400(client: FlaskClient) -> None:
    response = client.get(export_path("42"))

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"


def test_a_malformed_email_is_a_422(client: FlaskClient) -> None:
    response = client.get(export_path(CONTACT_ID, "?email=nobody"))

    assert response.status_code == 422
    assert "email" in response.get_json()["errors"]


@pytest.mark.parametrize("role", ["sales", "support", "marketing", "viewer"])
def test_only_an_admin_may_export_a_person(app: Flask, role: str) -> None:
    headers = {"Authorization": f"Bearer {token_for(app, role, team=True)}"}

    response = app.test_client().get(export_path(CONTACT_ID), headers=headers)

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
