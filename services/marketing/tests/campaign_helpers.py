"""What the campaign tests share: a segment of replica contacts, a campaign, its requests."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from services.marketing import segments
from services.marketing.campaign_fanout import run_campaigns
from services.marketing.models import Campaign, CampaignRecipient, Contact
from services.marketing.tests.consent_helpers import add_contact
from shared.db import Database
from shared.testing import outbox_events

CAMPAIGNS = "/api/v1/campaigns"
CONTENT = {"subject": "Spring sale", "body_text": "Hello,\n\nAll at half price.\n"}

__all__ = ["CAMPAIGNS", "CONTENT", "add_contact"]


def add_contacts(db: Database, count: int, prefix: str = "person") -> list[str]:
    """`count` replica contacts with addresses, in one transaction."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with db.session() as session:
        session.execute(
            sa.insert(Contact),
            [
                {
                    "id": contact_id,
                    "email": f"{prefix}{n}@example.com",
                    "email_key": f"{prefix}{n}@example.com",
                    "first_name": f"First{n}",
                    "last_name": f"Last{n}",
                    "custom_fields": {},
                }
                for n, contact_id in enumerate(ids)
            ],
        )
    return ids


def static_segment(db: Database, contact_ids: list[str], name: str = "Everyone") -> str:
    """A static segment holding these contacts."""
    with db.session() as session:
        segment = segments.create_segment(session, {"name": name, "kind": "static"})
        for start in range(0, len(contact_ids), segments.MAX_ADDED):
            batch = contact_ids[start : start + segments.MAX_ADDED]
            segments.add_members(session, segment, batch)
        return segment.id


def new_campaign(client: Any, segment_id: str, **fields: Any) -> dict[str, Any]:
    """A draft made through the API (a subject and text body unless told otherwise)."""
    body = {"name": "Spring sale", "segment_id": segment_id, **CONTENT, **fields}
    response = client.post(CAMPAIGNS, json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def launch(client: Any, campaign_id: str, **body: Any) -> Any:
    return client.post(f"{CAMPAIGNS}/{campaign_id}/launch", json=body)


def fan_out(db: Database, settings: Any, **options: Any) -> int:
    """One worker tick: launch what is due, fan out what is sending."""
    return run_campaigns(db, settings, **options)


def requests(db: Database) -> list[dict[str, Any]]:
    """The data of every `email.requested` in the outbox, oldest first."""
    return [data for _, data in outbox_events(db, "email.requested")]


def recipients(db: Database, campaign_id: str) -> dict[str, CampaignRecipient]:
    with db.session() as session:
        rows = session.scalars(
            sa.select(CampaignRecipient).where(CampaignRecipient.campaign_id == campaign_id)
        )
        return {row.contact_id: row for row in rows}


def campaign_row(db: Database, campaign_id: str) -> Campaign:
    with db.session() as session:
        row = session.get(Campaign, campaign_id)
        assert row is not None
        return row
