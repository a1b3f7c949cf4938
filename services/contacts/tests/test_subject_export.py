"""The contacts service's part of the subject access export (services/contacts/subject_export)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.contacts.tests.conftest import token_for

UNCAPPED = 55  # more than a list's default page: the export is never cut


def export_path(contact_id: str) -> str:
    return f"/api/v1/subject-exports/contacts/{contact_id}"


def test_the_export_holds_the_contact_its_notes_and_its_whole_timeline(
    client: FlaskClient, make_contact: Callable[..., dict[str, Any]]
) -> None:
    contact = make_contact(email="Ada@Example.com")
    note = client.post(f"/api/v1/contacts/{contact['id']}/notes", json={"body": "Prefers calls"})
    assert note.status_code == 201, note.get_json()
    for number in range(UNCAPPED):
        logged = client.post(
            f"/api/v1/contacts/{contact['id']}/interactions",
            json={"kind": "call", "subject": f"Call {number}"},
        )
        assert logged.status_code == 201, logged.get_json()

    response = client.get(export_path(contact["id"]))

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["service"] == "contacts"
    assert body["contact_id"] == contact["id"]
    assert body["exported_at"].endswith("Z")
    assert body["contact"]["email"] == contact["email"]
    assert [n["body"] for n in body["notes"]] == ["Prefers calls"]
    calls = [entry for entry in body["interactions"] if entry["kind"] == "call"]
    assert len(calls) == UNCAPPED


def test_a_merged_away_id_finds_the_contact_it_lives_under(
    client: FlaskClient, make_contact: Callable[..., dict[str, Any]]
) -> None:
    contact, duplicate = make_contact(), make_contact()
    merged = client.post(
        f"/api/v1/contacts/{contact['id']}/merge", json={"duplicate_id": duplicate["id"]}
    )
    assert merged.status_code == 200, merged.get_json()

    body = client.get(export_path(duplicate["id"])).get_json()

    assert body["contact"]["id"] == contact["id"]
    assert body["merged_ids"] == [duplicate["id"]]


def test_an_unknown_contact_is_a_404(client: FlaskClient) -> None:
    response = client.get(export_path(str(uuid.uuid4())))

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


def test_a_malformed_id_is_a_400(client: FlaskClient) -> None:
    response = client.get(export_path("not-a-uuid"))

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("query", ["?email=not-an-address", "?limit=10"])
def test_a_malformed_email_or_an_unknown_parameter_is_a_422(
    client: FlaskClient, make_contact: Callable[..., dict[str, Any]], query: str
) -> None:
    response = client.get(export_path(make_contact()["id"]) + query)

    assert response.status_code == 422
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("role", ["sales", "support", "marketing", "viewer"])
def test_only_an_admin_may_export_a_person(
    app: Flask, make_contact: Callable[..., dict[str, Any]], role: str
) -> None:
    contact = make_contact()
    caller = app.test_client()
    headers = {"Authorization": f"Bearer {token_for(app, role)}"}

    response = caller.get(export_path(contact["id"]), headers=headers)

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
