"""Helpers the tickets and comments tests share: tickets in a status, events, problems."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from shared.db import Database

BASE = "/api/v1/tickets"
UNKNOWN = "5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11"
CONTACT = "7d0c1b52-3f0e-4a39-9a53-1c2e3f4a5b6c"
# How to bring a new ticket to each status, one allowed move at a time.
PATH_TO = {
    "new": [],
    "open": ["open"],
    "pending": ["pending"],
    "resolved": ["resolved"],
    "closed": ["resolved", "closed"],
}


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


def new_ticket(client: FlaskClient, **fields: Any) -> dict[str, Any]:
    """Open a ticket through the API (for CONTACT unless a requester is named); its body."""
    payload = {"subject": "Printer on fire", **fields}
    if "requester" not in payload:
        payload.setdefault("contact_id", CONTACT)
    response = client.post(BASE, json=payload)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def ticket_in(client: FlaskClient, status: str, **fields: Any) -> dict[str, Any]:
    """A new ticket brought to `status` through allowed moves; its body."""
    ticket = new_ticket(client, **fields)
    for step in PATH_TO[status]:
        response = client.patch(f"{BASE}/{ticket['id']}", json={"status": step})
        assert response.status_code == 200, response.get_json()
        ticket = response.get_json()
    return ticket


def set_columns(db: Database, ticket_id: str, **values: Any) -> None:
    """Write ticket columns the API does not (SLA deadlines, breaches) straight to the row."""
    table = db.metadata.tables["tickets"]
    with db.engine.begin() as connection:
        connection.execute(table.update().where(table.c.id == ticket_id).values(**values))


def bearer(app: Flask, role: str, subject: str) -> dict[str, str]:
    from services.support.tests.conftest import token_for

    return {"Authorization": f"Bearer {token_for(app, role, subject)}"}


def support_routes(prefix: str = "/api/") -> list[tuple[str, str]]:
    """(method, rule) of every support route under `prefix`, from the URL map."""
    from services.support.app import create_app

    app = create_app({"database_url": "sqlite://"})
    routes = sorted(
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(prefix)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    )
    app.extensions["crm.db"].dispose()
    return routes
