"""Refresh tokens: rotation, reuse detection, logout, expiry and accounts that change."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from sqlalchemy import select

from gateway import tokens
from gateway.models import RefreshToken, RefreshTokenFamily
from gateway.tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, bearer
from shared.auth import ALGORITHM, signing_key
from shared.events import utcnow
from shared.keys import ACCESS_TOKEN

TOKEN_URL = "/api/v1/auth/token"
REFRESH_URL = "/api/v1/auth/refresh"
LOGOUT_URL = "/api/v1/auth/logout"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return response.get_json()


def sign_in(client, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> dict:
    response = client.post(TOKEN_URL, json={"email": email, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def refresh(client, refresh_token: str):
    return client.post(REFRESH_URL, json={"refresh_token": refresh_token})


def claims(app, access_token: str) -> dict:
    key = signing_key(app.extensions["crm.settings"], ACCESS_TOKEN)
    return jwt.decode(access_token, key, algorithms=[ALGORITHM], options={"verify_iss": False})


def stored_tokens(app) -> list[RefreshToken]:
    with app.extensions["crm.db"].session() as session:
        return list(session.scalars(select(RefreshToken)))


def test_signing_in_also_hands_out_a_refresh_token(client, app):
    body = sign_in(client)

    settings = app.extensions["crm.settings"]
    assert body["refresh_token"]
    assert body["refresh_expires_in"] == settings.refresh_ttl_seconds == 30 * 24 * 3600
    # Only its hash is stored.
    assert [row.token_hash for row in stored_tokens(app)] == [
        tokens.token_digest(body["refresh_token"])
    ]


def test_a_refresh_answers_a_new_access_token_and_a_new_refresh_token(client, app):
    first = sign_in(client)

    response = refresh(client, first["refresh_token"])

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == app.extensions["crm.settings"].jwt_ttl_seconds
    assert body["refresh_token"] != first["refresh_token"]
    assert body["access_token"] != first["access_token"]
    me = client.get("/api/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.get_json()["email"] == ADMIN_EMAIL
    # The next token of the chain works too.
    assert refresh(client, body["refresh_token"]).status_code == 200


def test_reusing_a_spent_refresh_token_revokes_its_whole_family(client, app):
    first = sign_in(client)
    second = refresh(client, first["refresh_token"]).get_json()
    other_session = sign_in(client)

    reuse = refresh(client, first["refresh_token"])

    assert "already used" in assert_problem(reuse, 401)["detail"]
    # The thief's or the owner's newer token is dead as well: both must sign in again.
    assert_problem(refresh(client, second["refresh_token"]), 401)
    # Another sign-in (another family) is untouched.
    assert refresh(client, other_session["refresh_token"]).status_code == 200


def test_logout_revokes_the_family_and_answers_204(client, app):
    first = sign_in(client)
    second = refresh(client, first["refresh_token"]).get_json()

    response = client.post(LOGOUT_URL, json={"refresh_token": second["refresh_token"]})

    assert response.status_code == 204
    assert_problem(refresh(client, second["refresh_token"]), 401)
    with app.extensions["crm.db"].session() as session:
        family = session.scalars(select(RefreshTokenFamily)).one()
        assert family.revoked_at is not None


def test_logging_out_with_an_unknown_or_used_up_token_still_answers_204(client):
    assert client.post(LOGOUT_URL, json={"refresh_token": "never-issued"}).status_code == 204
    first = sign_in(client)
    client.post(LOGOUT_URL, json={"refresh_token": first["refresh_token"]})

    assert (
        client.post(LOGOUT_URL, json={"refresh_token": first["refresh_token"]}).status_code == 204
    )


def test_an_unknown_refresh_token_is_refused(client):
    assert_problem(refresh(client, "made-up-token"), 401)


def test_a_refresh_token_expires(client, app, monkeypatch):
    body = sign_in(client)
    ttl = app.extensions["crm.settings"].refresh_ttl_seconds
    later = utcnow() + timedelta(seconds=ttl + 1)
    monkeypatch.setattr(tokens, "utcnow", lambda: later)

    assert "expired" in assert_problem(refresh(client, body["refresh_token"]), 401)["detail"]


def test_a_refresh_token_lives_for_the_configured_seconds(app, client, monkeypatch, database_url):
    from gateway.app import create_app
    from gateway.tests.conftest import close_app, gateway_config

    monkeypatch.setenv("CRM_REFRESH_TTL_SECONDS", "60")
    short = create_app(gateway_config(database_url, create_tables=False))
    try:
        body = sign_in(short.test_client())
        assert body["refresh_expires_in"] == 60
        monkeypatch.setattr(tokens, "utcnow", lambda: utcnow() + timedelta(seconds=61))
        assert_problem(refresh(short.test_client(), body["refresh_token"]), 401)
    finally:
        close_app(short)


def test_expired_spent_tokens_are_cleared_on_the_next_refresh(client, app):
    body = sign_in(client)
    for _ in range(3):
        body = refresh(client, body["refresh_token"]).get_json()
    current = tokens.token_digest(body["refresh_token"])
    with app.extensions["crm.db"].session() as session:
        for row in session.scalars(select(RefreshToken).where(RefreshToken.token_hash != current)):
            row.expires_at = utcnow() - timedelta(seconds=1)
    assert len(stored_tokens(app)) == 4

    assert refresh(client, body["refresh_token"]).status_code == 200

    assert len(stored_tokens(app)) == 2  # the one just spent and its successor


def test_a_deactivated_users_refresh_tokens_stop_working(client, admin_headers, make_user):
    user = make_user("leaving@example.com")
    body = sign_in(client, "leaving@example.com", "password-123")
    client.patch(f"/api/v1/users/{user.id}", json={"active": False}, headers=admin_headers)

    assert (
        "no longer active" in assert_problem(refresh(client, body["refresh_token"]), 401)["detail"]
    )
    # Reactivated, the old chain stays revoked: the user signs in again.
    client.patch(f"/api/v1/users/{user.id}", json={"active": True}, headers=admin_headers)
    assert_problem(refresh(client, body["refresh_token"]), 401)


def test_a_deleted_users_refresh_tokens_stop_working(client, app, admin_headers, make_user):
    user = make_user("removed@example.com")
    body = sign_in(client, "removed@example.com", "password-123")

    assert client.delete(f"/api/v1/users/{user.id}", headers=admin_headers).status_code == 204

    assert_problem(refresh(client, body["refresh_token"]), 401)
    left = {row.token_hash for row in stored_tokens(app)}
    assert tokens.token_digest(body["refresh_token"]) not in left  # gone with the user


def test_a_role_change_takes_effect_on_the_next_refresh(client, app, admin_headers, make_user):
    user = make_user("mover@example.com", role="sales")
    body = sign_in(client, "mover@example.com", "password-123")
    assert claims(app, body["access_token"])["role"] == "sales"
    client.patch(f"/api/v1/users/{user.id}", json={"role": "support"}, headers=admin_headers)

    renewed = refresh(client, body["refresh_token"]).get_json()

    assert claims(app, renewed["access_token"])["role"] == "support"


def test_signing_in_again_forgets_revoked_families(client, app):
    first = sign_in(client)
    client.post(LOGOUT_URL, json={"refresh_token": first["refresh_token"]})

    sign_in(client)

    with app.extensions["crm.db"].session() as session:
        families = list(session.scalars(select(RefreshTokenFamily)))
    assert len(families) == 1 and families[0].revoked_at is None


@pytest.mark.parametrize("url", [REFRESH_URL, LOGOUT_URL])
def test_bad_refresh_and_logout_bodies_are_4xx_problems(client, url):
    assert_problem(client.post(url, data="{not json", content_type="application/json"), 400)
    assert_problem(client.post(url, json=["refresh_token"]), 400)
    # No token in the body and no cookie: nothing to present (the web app's cookie mode).
    assert_problem(client.post(url, json={}), 401)
    assert (
        "refresh_token"
        in assert_problem(client.post(url, json={"refresh_token": 7}), 422)["errors"]
    )
    unknown = client.post(url, json={"refresh_token": "x", "extra": 1})
    assert "extra" in assert_problem(unknown, 422)["errors"]
    too_long = client.post(url, json={"refresh_token": "x" * 201})
    assert_problem(too_long, 422)
