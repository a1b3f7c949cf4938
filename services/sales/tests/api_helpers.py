"""Helpers the pipelines, deals, tasks and totals tests share: events, problems, snapshots."""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from services.sales.app import create_app
from shared.db import Database

UNKNOWN = "5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11"
DEFAULT_PIPELINE = "5a1e5000-0000-4000-8000-000000000001"
DEFAULT_STAGE_IDS = [f"5a1e5000-0000-4000-8000-0000000000{n}" for n in range(11, 16)]


def outbox_events(db: Database, event_type: str | None = None) -> list[dict[str, Any]]:
    """The envelopes in the outbox, oldest first (of one type if given)."""
    table = db.metadata.tables["outbox"]
    statement = sa.select(table.c.event_type, table.c.payload).order_by(table.c.position)
    with db.engine.connect() as connection:
        rows = connection.execute(statement).all()
    return [json.loads(payload) for kind, payload in rows if event_type in (None, kind)]


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The response is a problem+json of this status; its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["title"]
    return body


def snapshot(db: Database) -> dict[str, list[str]]:
    """Every row of every table: the proof that a refused request changed nothing."""
    with db.engine.connect() as connection:
        return {
            table.name: sorted(map(repr, connection.execute(sa.select(table))))
            for table in db.metadata.sorted_tables
        }


def api_routes(blueprint: str) -> list[tuple[str, str]]:
    """(method, rule) of every route of one sales blueprint, from the URL map."""
    app: Flask = create_app({"database_url": "sqlite://"})
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(f"{blueprint}."):
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                routes.append((method, rule.rule))
    app.extensions["crm.db"].dispose()
    return sorted(routes)


def path_for(rule: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        rule = rule.replace(f"<uuid:{name}>", value)
    return rule


def unknown_ids(names: list[str]) -> dict[str, str]:
    return {name: str(uuid.uuid4()) for name in names}


def new_deal(client: FlaskClient, **fields: Any) -> dict[str, Any]:
    """Create a deal through the API (name given unless named); its body."""
    response = client.post("/api/v1/deals", json={"name": "Deal", **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def new_pipeline(client: FlaskClient, name: str = "Renewals", stages: int = 3) -> dict[str, Any]:
    """Create a pipeline with `stages` stages (S0, S1, ...) through the API; its body."""
    specs = [{"name": f"S{i}", "probability": 10 * (i + 1)} for i in range(stages)]
    response = client.post("/api/v1/pipelines", json={"name": name, "stages": specs})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def bearer(app: Flask, role: str, subject: str) -> dict[str, str]:
    from services.sales.tests.conftest import token_for

    return {"Authorization": f"Bearer {token_for(app, role, subject)}"}
