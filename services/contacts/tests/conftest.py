"""Fixtures for the contacts service: an app on SQLite and PostgreSQL, a client, tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.contacts.app import create_app
from shared.auth import Principal, issue_token
from shared.db import Database

ADMIN_ID = "00000000-0000-4000-8000-000000000001"


@pytest.fixture
def app(database_url: str, tmp_path) -> Iterator[Flask]:
    app = create_app(
        {"database_url": database_url, "create_tables": True, "max_body_bytes": 2 * 1024 * 1024}
    )
    app.config["TESTING"] = True
    yield app
    app.extensions["crm.db"].dispose()


@pytest.fixture
def db(app: Flask) -> Database:
    return app.extensions["crm.db"]


def token_for(app: Flask, role: str = "admin", subject: str = ADMIN_ID) -> str:
    settings = app.extensions["crm.settings"]
    return issue_token(settings, Principal(subject, role, f"{role}@example.com"))


@pytest.fixture
def auth(app: Flask) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(app)}"}


@pytest.fixture
def client(app: Flask, auth: dict[str, str]) -> FlaskClient:
    """A test client that sends an admin token with every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = auth["Authorization"]
    return client


@pytest.fixture
def anonymous(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_contact(client: FlaskClient) -> Callable[..., dict[str, Any]]:
    counter = iter(range(1, 1_000_000))

    def factory(**fields: Any) -> dict[str, Any]:
        number = next(counter)
        body = {"first_name": "Ada", "last_name": f"Lovelace{number}"}
        body["email"] = f"ada{number}@example.com"
        body.update(fields)
        response = client.post("/api/v1/contacts", json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return factory


def row_counts(db: Database, *tables: str) -> dict[str, int]:
    """How many rows each table holds: to prove a refused request changed nothing."""
    import sqlalchemy as sa

    with db.engine.connect() as connection:
        return {
            name: connection.execute(
                sa.select(sa.func.count()).select_from(db.metadata.tables[name])
            ).scalar_one()
            for name in tables
        }
