"""The marketing service's part of the subject access export (services/marketing/subject_export)."""

from __future__ import annotations

import uuid

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.marketing.ledger import Origin
from services.marketing.models import CampaignRecipient, ContactStage, ContactTag
from services.marketing.suppressions import suppress
from services.marketing.tests.campaign_helpers import new_campaign, static_segment
from services.marketing.tests.conftest import token_for
from services.marketing.tests.consent_helpers import add_contact, add_list, subscribe
from shared.db import Database
from shared.events import utcnow

UNCAPPED = 55  # more than a list's default page: the export is never cut


def export_path(contact_id: str, query: str = "") -> str:
    return f"/api/v1/subject-exports/marketing/{contact_id}{query}"


def test_the_export_holds_replica_segments_consent_and_suppressions(
    client: FlaskClient, db: Database
) -> None:
    contact_id = add_contact(db, "Ada@Example.com")
    other_id = add_contact(db, "grace@example.com")
    with db.session() as session:
        session.add(ContactTag(contact_id=contact_id, tag="vip"))
        session.add(
            ContactStage(contact_id=contact_id, version=1, stage="lead", occurred_at=utcnow())
        )
        # Suppressed under the address the contacts service has now, not the replica's.
        suppress(session, "ada.new@example.com", "unsubscribed", Origin("api"))
    segment_id = static_segment(db, [contact_id, other_id], name="Early adopters")
    for number in range(UNCAPPED):
        assert subscribe(client, contact_id, add_list(db, f"List {number}")).status_code in (
            200,
            201,
        )
    assert subscribe(client, other_id, add_list(db, "Not hers")).status_code in (200, 201)
    campaign = new_campaign(client, segment_id)
    with db.session() as session:
        session.add(
            CampaignRecipient(
                campaign_id=campaign["id"], contact_id=contact_id, status="sent", sent_at=utcnow()
            )
        )

    response = client.get(export_path(contact_id, "?email=ada.new@example.com"))

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["service"] == "marketing" and body["contact_id"] == contact_id
    assert body["contact"]["email"] == "Ada@Example.com" and body["contact"]["tags"] == ["vip"]
    assert [segment["name"] for segment in body["segments"]] == ["Early adopters"]
    assert len(body["subscriptions"]) == UNCAPPED
    assert {line["contact_id"] for line in body["consent_ledger"] if line["contact_id"]} == {
        contact_id
    }
    assert len(body["consent_ledger"]) >= UNCAPPED + 1  # each subscription, the suppression
    assert [row["email"] for row in body["suppressions"]] == ["ada.new@example.com"]
    assert [stage["stage"] for stage in body["lifecycle_stages"]] == ["lead"]
    assert [(c["campaign"], c["status"]) for c in body["campaigns"]] == [("Spring sale", "sent")]
    assert body["automation_runs"] == []


def test_a_person_marketing_knows_nothing_of_gets_empty_sections(client: FlaskClient) -> None:
    body = client.get(export_path(str(uuid.uuid4()))).get_json()

    assert body["contact"] is None
    assert body["subscriptions"] == body["consent_ledger"] == body["suppressions"] == []


def test_a_malformed_id_is_a_400(client: FlaskClient) -> None:
    response = client.get(export_path("x" * 36))

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"


def test_a_malformed_email_is_a_422(client: FlaskClient) -> None:
    response = client.get(export_path(str(uuid.uuid4()), "?email=a@b"))

    assert response.status_code == 422


@pytest.mark.parametrize("role", ["sales", "support", "marketing", "viewer"])
def test_only_an_admin_may_export_a_person(app: Flask, role: str) -> None:
    headers = {"Authorization": f"Bearer {token_for(app, role)}"}

    response = app.test_client().get(export_path(str(uuid.uuid4())), headers=headers)

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
