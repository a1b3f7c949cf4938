"""Fixtures of the gateway's tests: an app on SQLite and PostgreSQL, a client, tokens, users."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from gateway import domain
from gateway.app import bootstrap_admin, create_app
from gateway.models import User

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin"  # the development default: shorter than the minimum on purpose
# Cheap argon2 parameters: the tests hash hundreds of passwords.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def gateway_config(database_url: str, **overrides: Any) -> dict[str, Any]:
    """A test_config for create_app: own database, fast hashing, known admin."""
    return {
        "database_url": database_url,
        "create_tables": True,
        "password_hasher": FAST_HASHER,
        "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD,
        "TESTING": True,
        **overrides,
    }


def close_app(app: Flask) -> None:
    app.extensions["gateway.http"].close()
    app.extensions["gateway.fanout_pool"].shutdown(wait=False, cancel_futures=True)
    app.extensions["crm.db"].dispose()
    limiter = app.extensions.get("gateway.rate_limiter")
    if limiter is not None:
        limiter.dispose()


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    app = create_app(gateway_config(database_url))
    bootstrap_admin(app.extensions["crm.db"], app.extensions["crm.settings"], FAST_HASHER)
    yield app
    close_app(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def get_token(client: FlaskClient) -> Callable[[str, str], str]:
    """Sign in through the API and return the access token."""

    def sign_in(email: str, password: str) -> str:
        response = client.post("/api/v1/auth/token", json={"email": email, "password": password})
        assert response.status_code == 200, response.get_json()
        return response.get_json()["access_token"]

    return sign_in


def ensure_account(app: Flask, subject: str, role: str) -> None:
    """A user row for a token made by hand: the gateway checks tokens against accounts."""
    with app.extensions["crm.db"].session() as session:
        if session.get(User, subject) is None:
            address = f"{subject}@accounts.example"
            session.add(
                User(id=subject, email=address, email_key=address, role=role, password_hash="-")
            )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin_headers(get_token: Callable[[str, str], str]) -> dict[str, str]:
    return bearer(get_token(ADMIN_EMAIL, ADMIN_PASSWORD))


@pytest.fixture
def make_user(app: Flask) -> Callable[..., User]:
    """Add a user straight through the domain (no HTTP)."""

    def add(
        email: str, role: str = "sales", password: str = "password-123", active: bool = True
    ) -> User:
        fields = {"email": email, "role": role, "password": password, "active": active}
        with app.extensions["crm.db"].session() as session:
            return domain.create_user(session, FAST_HASHER, fields)

    return add


@pytest.fixture
def users_snapshot(app: Flask) -> Callable[[], list[tuple[Any, ...]]]:
    """Every stored user row, to prove a refused request changed nothing."""

    def snapshot() -> list[tuple[Any, ...]]:
        columns = [column for column in User.__table__.columns]
        with app.extensions["crm.db"].session() as session:
            rows = session.execute(select(*columns).order_by(User.id)).all()
        return [tuple(row) for row in rows]

    return snapshot


@pytest.fixture
def fakes() -> Iterator[dict[str, Any]]:
    """Every stand-in service on a port of its own (gateway.tests.fake_services).

    Fresh ones per test: calls a view left running must not reach the next test's.
    """
    from gateway.tests.fake_services import running_services  # it imports this module

    with running_services() as services:
        yield services
