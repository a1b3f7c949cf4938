"""What the automation tests share: rules made through the API, events handled as the
consumer does, the runs and the outbox they leave."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from services.marketing import handlers as registry
from services.marketing.models import AutomationRun
from shared.db import Database
from shared.testing import handle_event, make_event, outbox_envelopes

AUTOMATIONS = "/api/v1/automations"
PROBLEM = "application/problem+json"
OWNER = "00000000-0000-4000-8000-0000000000a1"


def rule_body(**fields: Any) -> dict[str, Any]:
    """A valid enabled rule: the welcome template on contact.created, unless told otherwise
    (a field given as None is left out)."""
    body: dict[str, Any] = {
        "name": "Welcome",
        "trigger": {"event_type": "contact.created"},
        "action": {"type": "send_template", "template": "welcome"},
        "enabled": True,
    }
    return {key: value for key, value in {**body, **fields}.items() if value is not None}


def new_rule(client: Any, **fields: Any) -> dict[str, Any]:
    response = client.post(AUTOMATIONS, json=rule_body(**fields))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def conditions(*filters: tuple[str, str, Any]) -> dict[str, Any]:
    """One group of filters (AND-ed)."""
    return {
        "filter_groups": [
            {"filters": [{"field": f, "operator": o, "value": v} for f, o, v in filters]}
        ]
    }


def handle(app: Any, event: Any) -> None:
    """Apply one event with every part's handler in one transaction, as the consumer does."""
    settings = app.extensions["crm.settings"]
    handle_event(app.extensions["crm.db"], registry.handlers(settings), event)


def contact_event(event_type: str, contact_id: str, version: int = 1, **fields: Any) -> Any:
    data = {
        "id": contact_id,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "lifecycle_stage": "lead",
        "owner_id": OWNER,
        "tags": [],
        "custom_fields": {},
        "version": version,
        **fields,
    }
    return make_event(
        event_type, data, "contacts", aggregate_id=contact_id, aggregate_version=version
    )


def new_contact(app: Any, **fields: Any) -> str:
    """A contact in the replica through its contact.created event (no rule wants it)."""
    contact_id = str(uuid.uuid4())
    handle(app, contact_event("contact.updated", contact_id, **fields))
    return contact_id


def runs(db: Database, rule_id: str | None = None) -> list[AutomationRun]:
    statement = sa.select(AutomationRun).order_by(AutomationRun.created_at)
    if rule_id is not None:
        statement = statement.where(AutomationRun.rule_id == rule_id)
    with db.session() as session:
        return list(session.scalars(statement))


def published(db: Database, event_type: str) -> list[dict[str, Any]]:
    """Envelopes of `event_type` in the outbox, oldest first."""
    return outbox_envelopes(db, event_type)
