"""The support service's part of the subject access export (services/support/subject_export)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.support.models import CsatRating
from services.support.tests.ticket_helpers import (
    CONTACT,
    UNKNOWN,
    assert_problem,
    bearer,
    new_ticket,
    ticket_in,
)
from shared.db import Database

UNCAPPED = 55  # more than a list's default page: the export is never cut


def export_path(contact_id: str, query: str = "") -> str:
    return f"/api/v1/subject-exports/support/{contact_id}{query}"


def comment(client: FlaskClient, ticket_id: str, body: str, public: bool) -> None:
    response = client.post(
        f"/api/v1/tickets/{ticket_id}/comments", json={"body": body, "public": public}
    )
    assert response.status_code == 201, response.get_json()


def test_the_export_holds_tickets_every_comment_marked_and_the_ratings(
    client: FlaskClient, db: Database
) -> None:
    rated = ticket_in(client, "resolved")
    comment(client, rated["id"], "We replaced the toner", public=True)
    comment(client, rated["id"], "Customer was rude on the phone", public=False)
    with db.session() as session:
        session.add(CsatRating(ticket_id=rated["id"], rating=4, comment="Quick"))
    by_mail = new_ticket(client, requester={"email": "Ada@Example.com", "name": "Ada"})
    for _ in range(UNCAPPED):
        new_ticket(client)
    new_ticket(client, contact_id=UNKNOWN)  # someone else's

    response = client.get(export_path(CONTACT, "?email=ada@example.com"))

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["service"] == "support" and body["contact_id"] == CONTACT
    tickets = {ticket["id"]: ticket for ticket in body["tickets"]}
    assert len(tickets) == UNCAPPED + 2 and by_mail["id"] in tickets
    visibility = {c["body"]: c["visibility"] for c in tickets[rated["id"]]["comments"]}
    assert visibility == {
        "We replaced the toner": "public",
        "Customer was rude on the phone": "internal",
    }
    assert tickets[rated["id"]]["csat"]["rating"] == 4
    assert [rating["comment"] for rating in body["csat"]] == ["Quick"]


def test_a_person_support_knows_nothing_of_gets_empty_sections(client: FlaskClient) -> None:
    body = client.get(export_path(UNKNOWN)).get_json()

    assert (body["tickets"], body["csat"]) == ([], [])


def test_a_malformed_id_is_a_400(client: FlaskClient) -> None:
    assert_problem(client.get(export_path("tickets")), 400)


def test_an_unknown_parameter_is_a_422(client: FlaskClient) -> None:
    assert_problem(client.get(export_path(CONTACT, "?status=open")), 422)


@pytest.mark.parametrize("role", ["sales", "support", "marketing", "viewer"])
def test_only_an_admin_may_export_a_person(app: Flask, client: FlaskClient, role: str) -> None:
    new_ticket(client)
    caller = app.test_client()

    response = caller.get(export_path(CONTACT), headers=bearer(app, role, UNKNOWN))

    assert_problem(response, 403)
