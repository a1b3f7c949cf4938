"""A new system ships one SLA policy per priority (a data migration): tickets get deadlines."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask

from services.support.app import create_app
from services.support.models import SlaPolicy
from shared.events import utcnow
from shared.migrations import upgrade
from shared.testing import admin_client

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
HOURS = {"urgent": (1, 4), "high": (4, 24), "normal": (8, 48), "low": (24, 120)}


@pytest.fixture
def migrated_app(database_url: str) -> Iterator[Flask]:
    """The api on a database made by the migrations alone, as `crm run` makes it."""
    upgrade(MIGRATIONS, database_url)
    app = create_app({"database_url": database_url})
    app.config["TESTING"] = True
    yield app
    app.extensions["crm.db"].dispose()


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_new_ticket_on_a_fresh_system_has_both_deadlines(migrated_app):
    client = admin_client(migrated_app)
    before = utcnow()
    for priority, (first_response, resolution) in HOURS.items():
        answer = client.post(
            "/api/v1/tickets",
            json={
                "subject": f"Printer on fire ({priority})",
                "priority": priority,
                "contact_id": "00000000-0000-4000-8000-0000000000c1",
            },
        )
        assert answer.status_code == 201, answer.get_json()
        ticket = answer.get_json()
        first_due = _moment(ticket["first_response_due_at"]) - before
        resolution_due = _moment(ticket["resolution_due_at"]) - before
        assert (
            timedelta(hours=first_response)
            <= first_due
            < timedelta(hours=first_response, minutes=1)
        )
        assert (
            timedelta(hours=resolution) <= resolution_due < timedelta(hours=resolution, minutes=1)
        )


def test_the_default_policies_are_listed_and_editable(migrated_app):
    client = admin_client(migrated_app)
    listed = client.get("/api/v1/sla-policies").get_json()["items"]
    targets = {
        p["priority"]: (p["first_response_minutes"], p["resolution_minutes"]) for p in listed
    }
    assert targets == {p: (f * 60, r * 60) for p, (f, r) in HOURS.items()}

    [normal] = [policy for policy in listed if policy["priority"] == "normal"]
    url = f"/api/v1/sla-policies/{normal['id']}"
    changed = client.patch(url, json={"first_response_minutes": 120})
    assert changed.status_code == 200, changed.get_json()
    assert client.get(url).get_json()["first_response_minutes"] == 120
    assert client.delete(f"/api/v1/sla-policies/{listed[0]['id']}").status_code == 204


def test_upgrading_keeps_an_operators_own_policy(database_url):
    upgrade(MIGRATIONS, database_url, "0001")
    app = create_app({"database_url": database_url})
    db = app.extensions["crm.db"]
    now = utcnow()
    with db.session() as session:
        session.add(
            SlaPolicy(
                name="Ours",
                priority="high",
                first_response_minutes=30,
                resolution_minutes=600,
                created_at=now,
                updated_at=now,
            )
        )
    upgrade(MIGRATIONS, database_url)
    with db.session() as session:
        policies = {p.priority: p for p in session.query(SlaPolicy).all()}
        assert sorted(policies) == sorted(HOURS)
        assert (policies["high"].name, policies["high"].first_response_minutes) == ("Ours", 30)
    db.dispose()
