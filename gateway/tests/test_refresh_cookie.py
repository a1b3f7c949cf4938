"""Cookie mode for the web app: the refresh token only in an HttpOnly cookie, as attacked."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from gateway.auth_api import REFRESH_COOKIE
from gateway.models import RefreshTokenFamily
from gateway.tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, bearer
from shared.openapi import app_document

TOKEN_URL = "/api/v1/auth/token"
REFRESH_URL = "/api/v1/auth/refresh"
LOGOUT_URL = "/api/v1/auth/logout"
COOKIE_PATH = "/api/v1/auth"
ATTRIBUTES = "Path=/api/v1/auth; Secure; HttpOnly; SameSite=Strict"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return response.get_json()


def cookie_sign_in(client):
    body = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "session": "cookie"}
    response = client.post(TOKEN_URL, json=body)
    assert response.status_code == 200, response.get_json()
    return response


def set_cookie_of(response) -> str:
    (value,) = response.headers.getlist("Set-Cookie")
    return value


def cookie_value(response) -> str:
    name, _, rest = set_cookie_of(response).partition("=")
    assert name == REFRESH_COOKIE
    return rest.partition(";")[0]


def present(client, token: str) -> None:
    client.set_cookie(REFRESH_COOKIE, token, path=COOKIE_PATH)


def families(app) -> list[RefreshTokenFamily]:
    with app.extensions["crm.db"].session() as session:
        return list(session.scalars(select(RefreshTokenFamily)))


def test_cookie_sign_in_sets_exactly_the_cookie_and_keeps_the_token_out_of_the_body(client, app):
    response = cookie_sign_in(client)

    token = cookie_value(response)
    ttl = app.extensions["crm.settings"].refresh_ttl_seconds
    assert set_cookie_of(response) == f"{REFRESH_COOKIE}={token}; Max-Age={ttl}; {ATTRIBUTES}"
    body = response.get_json()
    assert "refresh_token" not in body and token not in response.get_data(as_text=True)
    assert body["expires_in"] == app.extensions["crm.settings"].jwt_ttl_seconds
    assert client.get("/api/v1/me", headers=bearer(body["access_token"])).status_code == 200


def test_body_mode_stays_the_default_and_sets_no_cookie(client):
    response = client.post(TOKEN_URL, json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})

    assert "refresh_token" in response.get_json()
    assert "Set-Cookie" not in response.headers
    wrong = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "session": "url"}
    assert "session" in assert_problem(client.post(TOKEN_URL, json=wrong), 422)["errors"]


@pytest.mark.parametrize("send", ["empty object", "no body"])
def test_a_cookie_refresh_rotates_the_cookie_and_answers_an_access_token(client, send):
    first = cookie_value(cookie_sign_in(client))

    if send == "empty object":
        response = client.post(REFRESH_URL, json={})
    else:
        response = client.post(REFRESH_URL, content_type="application/json")

    assert response.status_code == 200, response.get_json()
    second = cookie_value(response)
    assert second != first and second not in response.get_data(as_text=True)
    assert "refresh_token" not in response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    me = client.get("/api/v1/me", headers=bearer(response.get_json()["access_token"]))
    assert me.status_code == 200


def test_a_refresh_without_the_cookie_is_401(client):
    assert_problem(client.post(REFRESH_URL, json={}), 401)
    assert_problem(client.post(LOGOUT_URL, json={}), 401)


def test_a_spent_cookie_presented_again_revokes_its_family(client, app):
    spent = cookie_value(cookie_sign_in(client))
    current = cookie_value(client.post(REFRESH_URL, json={}))

    present(client, spent)
    refused = client.post(REFRESH_URL, json={})

    assert_problem(refused, 401)
    assert set_cookie_of(refused) == f"{REFRESH_COOKIE}=; Max-Age=0; {ATTRIBUTES}"
    assert all(family.revoked_at is not None for family in families(app))
    present(client, current)
    assert_problem(client.post(REFRESH_URL, json={}), 401)


def test_a_forged_cookie_or_one_of_a_revoked_family_is_401(client, app):
    revoked = cookie_value(cookie_sign_in(client))
    assert client.post(LOGOUT_URL, json={}).status_code == 204
    live = cookie_value(cookie_sign_in(client))

    present(client, "forged-" + live[7:])
    assert_problem(client.post(REFRESH_URL, json={}), 401)
    present(client, revoked)
    assert_problem(client.post(REFRESH_URL, json={}), 401)
    present(client, live)
    assert client.post(REFRESH_URL, json={}).status_code == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost.evil"])
def test_a_cookie_refresh_from_a_foreign_origin_is_403_and_spends_nothing(client, origin):
    token = cookie_value(cookie_sign_in(client))

    assert_problem(client.post(REFRESH_URL, json={}, headers={"Origin": origin}), 403)
    assert_problem(client.post(LOGOUT_URL, json={}, headers={"Origin": origin}), 403)

    present(client, token)
    assert client.post(REFRESH_URL, json={}).status_code == 200


def test_the_own_origin_and_an_allowed_cors_origin_may_refresh(client, app, monkeypatch):
    monkeypatch.setitem(
        app.extensions["crm.settings"].extra, "cors_origins", ("https://app.example", "*")
    )
    cookie_sign_in(client)

    own = client.post(REFRESH_URL, json={}, headers={"Origin": "http://localhost"})
    allowed = client.post(REFRESH_URL, json={}, headers={"Origin": "https://app.example"})

    assert own.status_code == 200 and allowed.status_code == 200
    # `*` lets any origin read public answers, never spend the cookie.
    assert_problem(client.post(REFRESH_URL, json={}, headers={"Origin": "https://x.example"}), 403)


@pytest.mark.parametrize("data", ["", "refresh_token=x"])
def test_a_form_encoded_refresh_is_415_and_spends_nothing(client, data):
    token = cookie_value(cookie_sign_in(client))

    form = "application/x-www-form-urlencoded"
    assert_problem(client.post(REFRESH_URL, data=data, content_type=form), 415)
    assert_problem(client.post(LOGOUT_URL, data=data, content_type=form), 415)

    present(client, token)
    assert client.post(REFRESH_URL, json={}).status_code == 200


def test_a_token_in_both_the_body_and_the_cookie_is_400_and_spends_neither(client):
    cookie = cookie_value(cookie_sign_in(client))
    body = client.post(TOKEN_URL, json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    in_body = body.get_json()["refresh_token"]

    assert_problem(client.post(REFRESH_URL, json={"refresh_token": in_body}), 400)
    assert_problem(client.post(LOGOUT_URL, json={"refresh_token": in_body}), 400)

    assert client.post(REFRESH_URL, json={}).status_code == 200
    client.delete_cookie(REFRESH_COOKIE, path=COOKIE_PATH)
    assert client.post(REFRESH_URL, json={"refresh_token": in_body}).status_code == 200
    assert cookie


def test_cookie_logout_revokes_the_family_ends_access_and_clears_the_cookie(client, app):
    signed_in = cookie_sign_in(client)
    token, access = cookie_value(signed_in), signed_in.get_json()["access_token"]

    response = client.post(LOGOUT_URL, json={})

    assert response.status_code == 204
    assert set_cookie_of(response) == f"{REFRESH_COOKIE}=; Max-Age=0; {ATTRIBUTES}"
    assert all(family.revoked_at is not None for family in families(app))
    assert client.get("/api/v1/me", headers=bearer(access)).status_code == 401
    present(client, token)
    assert_problem(client.post(REFRESH_URL, json={}), 401)


def test_the_document_shows_the_session_field_and_the_cookie(app):
    document = app_document(app)
    paths, schemas = document["paths"], document["components"]["schemas"]
    assert schemas["TokenRequest"]["properties"]["session"]["enum"] == ["body", "cookie"]
    assert "required" not in schemas["RefreshRequest"]

    token = paths["/api/v1/auth/token"]["post"]
    refresh, logout = paths[REFRESH_URL]["post"], paths[LOGOUT_URL]["post"]
    assert "Set-Cookie" in token["responses"]["200"]["headers"]
    assert "Set-Cookie" in refresh["responses"]["200"]["headers"]
    assert "Set-Cookie" in logout["responses"]["204"]["headers"]
    for operation in (refresh, logout):
        assert {"401", "403", "415"} <= set(operation["responses"])
        assert operation["requestBody"]["required"] is False
