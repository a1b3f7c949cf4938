"""Fixtures for the support service: an app on SQLite and PostgreSQL, a client, tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.support.app import create_app
from shared.auth import Principal, issue_token
from shared.db import Database

ADMIN_ID = "00000000-0000-4000-8000-000000000001"
AGENT_ID = "00000000-0000-4000-8000-000000000003"


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
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
def client(app: Flask) -> FlaskClient:
    """A test client that sends an admin token with every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app)}"
    return client


@pytest.fixture
def anonymous(app: Flask) -> FlaskClient:
    return app.test_client()


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
