"""The automations that ship with the service, disabled: a marketer reads them, adjusts
the templates they name and switches them on.

`install_default_rules` runs when the `automation_rules` table is made: by migration 0004,
and by `create_all` (tests, a first start without migrations) through the table's
`after_create` hook in models.py. Never at any other time, so a default a user deleted
stays deleted. Each default has a fixed id and is only inserted when absent, so running
it twice changes nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.engine import Connection

from shared.events import utcnow

NAMESPACE = uuid.UUID("6f1e4b0e-6a52-4c55-9a3c-5a1d2a0c7e11")


def _rule_id(key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"default-automation:{key}"))


DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {
        "id": _rule_id("welcome"),
        "name": "Welcome email",
        "description": "Send the `welcome` template to every new contact.",
        "event_type": "contact.created",
        "conditions": None,
        "inactive_days": None,
        "actions": [{"type": "send_template", "template": "welcome"}],
    },
    {
        "id": _rule_id("win-back"),
        "name": "Win-back after 90 days",
        "description": "Send the `win-back` template to customers inactive for 90 days.",
        "event_type": "contact.inactive",
        "conditions": {
            "filter_groups": [
                {
                    "filters": [
                        {"field": "contact.lifecycle_stage", "operator": "eq", "value": "customer"}
                    ]
                }
            ]
        },
        "inactive_days": 90,
        "actions": [{"type": "send_template", "template": "win-back"}],
    },
    {
        "id": _rule_id("sla-breach-owner"),
        "name": "Tell the owner about an SLA breach of a customer with open deals",
        "description": "Email the contact's owner when a ticket of a contact with open "
        "deals breaches its SLA.",
        "event_type": "ticket.sla_breached",
        "conditions": {
            "filter_groups": [
                {"filters": [{"field": "contact.deals_open", "operator": "gt", "value": 0}]}
            ]
        },
        "inactive_days": None,
        "actions": [{"type": "notify_owner", "template": "sla-breached-owner"}],
    },
)


def install_default_rules(connection: Connection, table: Table) -> int:
    """Insert the shipped rules (disabled) that `table` lacks; how many were inserted."""
    ids = [rule["id"] for rule in DEFAULT_RULES]
    present = set(connection.scalars(select(table.c.id).where(table.c.id.in_(ids))))
    now = utcnow()
    rows = [
        {**rule, "delay_seconds": 0, "enabled": False, "version": 1}
        | {"created_at": now, "updated_at": now}
        for rule in DEFAULT_RULES
        if rule["id"] not in present
    ]
    if rows:
        connection.execute(insert(table), rows)
    return len(rows)
