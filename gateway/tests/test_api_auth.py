"""Signing in (`POST /auth/token`), token verification and `GET /me`."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from argon2 import PasswordHasher

from gateway.tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, bearer
from shared.auth import ALGORITHM, ISSUER, Principal, issue_token

TOKEN_URL = "/api/v1/auth/token"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    return body


def test_signing_in_returns_a_bearer_token_that_opens_me(client, app):
    response = client.post(TOKEN_URL, json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})

    assert response.status_code == 200
    body = response.get_json()
    assert {"access_token", "token_type", "expires_in"} <= set(body)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == app.extensions["crm.settings"].jwt_ttl_seconds
    assert response.headers["Cache-Control"] == "no-store"
    me = client.get("/api/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.get_json()["email"] == ADMIN_EMAIL
    assert me.get_json()["role"] == "admin"
    assert "password" not in me.get_json() and "password_hash" not in me.get_json()


def test_signing_in_ignores_the_letter_case_of_the_email(client, make_user):
    make_user("Mixed.Case@Example.com", password="password-123")

    response = client.post(
        TOKEN_URL, json={"email": "mixed.case@EXAMPLE.com", "password": "password-123"}
    )

    assert response.status_code == 200


def test_a_wrong_password_and_an_unknown_email_get_the_same_401(client):
    wrong = client.post(TOKEN_URL, json={"email": ADMIN_EMAIL, "password": "not-it"})
    unknown = client.post(TOKEN_URL, json={"email": "nobody@example.com", "password": "not-it"})

    assert assert_problem(wrong, 401)["detail"] == assert_problem(unknown, 401)["detail"]
    assert wrong.headers["WWW-Authenticate"] == "Bearer"


def test_an_unknown_email_still_costs_a_hash_verification(client, app, monkeypatch):
    calls = []
    original = PasswordHasher.verify

    def counting_verify(self, hashed, password):
        calls.append(hashed)
        return original(self, hashed, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting_verify)

    response = client.post(TOKEN_URL, json={"email": "nobody@example.com", "password": "x"})

    assert response.status_code == 401
    assert len(calls) == 1


def test_an_inactive_user_cannot_sign_in(client, make_user):
    make_user("gone@example.com", password="password-123", active=False)

    response = client.post(
        TOKEN_URL, json={"email": "gone@example.com", "password": "password-123"}
    )

    assert_problem(response, 401)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        ("{not json", 400),
        ("", 400),
        ('["a list"]', 400),
        (json.dumps({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "otp": "1"}), 422),
        (json.dumps({"email": ADMIN_EMAIL}), 422),
        (json.dumps({"email": 5, "password": ADMIN_PASSWORD}), 422),
    ],
    ids=["malformed", "empty", "not-an-object", "unknown-field", "missing-field", "wrong-type"],
)
def test_bad_sign_in_bodies_are_refused(client, data, status):
    response = client.post(TOKEN_URL, data=data, content_type="application/json")

    assert_problem(response, status)


def _claims(**changes) -> dict:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "someone", "role": "admin", "iat": now, "exp": now + 600}
    return {**claims, **changes}


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("kind", ["expired", "tampered", "alg-none", "other-secret", "garbage"])
def test_invalid_tokens_get_401(client, app, kind):
    settings = app.extensions["crm.settings"]
    viewer = Principal("someone", "viewer", "v@example.com")
    tokens = {
        "expired": lambda: issue_token(settings, viewer, ttl_seconds=-30),
        "tampered": lambda: _tampered(issue_token(settings, viewer)),
        "alg-none": lambda: jwt.encode(_claims(), None, algorithm="none"),
        "other-secret": lambda: jwt.encode(_claims(), "x" * 48, algorithm=ALGORITHM),
        "garbage": lambda: "not.a.token",
    }

    response = client.get("/api/v1/me", headers=bearer(tokens[kind]()))

    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("header", [None, "Basic YWRtaW46YWRtaW4=", "Bearer ", "Bearer"])
def test_me_without_a_bearer_token_is_401(client, header):
    headers = {"Authorization": header} if header is not None else {}

    assert_problem(client.get("/api/v1/me", headers=headers), 401)


def test_a_deactivated_users_token_stops_working(client, make_user, get_token, admin_headers):
    user = make_user("leaver@example.com", password="password-123")
    token = get_token("leaver@example.com", "password-123")
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200

    client.patch(f"/api/v1/users/{user.id}", json={"active": False}, headers=admin_headers)

    assert_problem(client.get("/api/v1/me", headers=bearer(token)), 401)


def test_errors_carry_the_request_id(client):
    response = client.get("/api/v1/me", headers={"X-Request-ID": "trace-me-1"})

    assert response.headers["X-Request-ID"] == "trace-me-1"
