"""Fixtures for the contacts service: an app on SQLite and PostgreSQL, a client, tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.contacts.app import create_app
from shared.db import Database
from shared.testing import ADMIN_ID, row_counts, service_app, token_for

__all__ = ["ADMIN_ID", "row_counts", "token_for"]


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    yield from service_app(create_app, database_url)


@pytest.fixture
def db(app: Flask) -> Database:
    return app.extensions["crm.db"]


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
