"""Fixtures for the marketing service: an app on SQLite and PostgreSQL, a client, tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.marketing.app import create_app
from shared.db import Database
from shared.testing import ADMIN_ID, admin_client, row_counts, service_app, token_for

__all__ = ["ADMIN_ID", "row_counts", "token_for"]


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    yield from service_app(create_app, database_url)


@pytest.fixture
def db(app: Flask) -> Database:
    return app.extensions["crm.db"]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client that sends an admin token with every request."""
    return admin_client(app)


@pytest.fixture
def anonymous(app: Flask) -> FlaskClient:
    return app.test_client()
