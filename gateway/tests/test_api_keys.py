"""API keys: made once by an admin, used through `X-API-Key`, forwarded as a bearer token."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
from flask import Flask, Response, jsonify, request
from sqlalchemy import select
from werkzeug.serving import make_server

from gateway import api_keys
from gateway.app import bootstrap_admin, create_app
from gateway.models import ApiKey
from gateway.proxy import ROUTES
from gateway.tests.conftest import FAST_HASHER, bearer, close_app, gateway_config
from shared.auth import ALGORITHM, ISSUER, protect, signing_key, verify_token
from shared.config import load_settings
from shared.events import utcnow
from shared.keys import SERVICE_CALL
from shared.web import init_app

KEYS_URL = "/api/v1/api-keys"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return response.get_json()


@pytest.fixture(scope="module")
def upstream_calls() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for every service that remembers the headers of each call."""
    calls: list[dict[str, Any]] = []
    upstream = Flask("upstream")

    @upstream.route("/<path:path>", methods=["GET", "POST", "PATCH", "DELETE"])
    def echo(path: str) -> Response:
        calls.append({"method": request.method, "path": path, "headers": dict(request.headers)})
        return jsonify({"ok": True})

    server = make_server("127.0.0.1", 0, upstream, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", calls
    server.shutdown()
    server.server_close()


@pytest.fixture
def calls(upstream_calls) -> list[dict[str, Any]]:
    upstream_calls[1].clear()
    return upstream_calls[1]


@pytest.fixture
def app(database_url: str, upstream_calls) -> Iterator[Flask]:
    services = dict.fromkeys(set(ROUTES.values()), upstream_calls[0])
    app = create_app(gateway_config(database_url, service_urls=services))
    bootstrap_admin(app.extensions["crm.db"], app.extensions["crm.settings"], FAST_HASHER)
    yield app
    close_app(app)


def make_key(client, headers, name: str = "importer", role: str = "sales") -> dict[str, Any]:
    response = client.post(KEYS_URL, json={"name": name, "role": role}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def key_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def stored_key(app, key_id: str) -> ApiKey:
    with app.extensions["crm.db"].session() as session:
        return session.get(ApiKey, key_id)


def test_creating_a_key_shows_it_once(client, app, admin_headers):
    response = client.post(
        KEYS_URL, json={"name": "importer", "role": "sales"}, headers=admin_headers
    )

    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert response.headers["Location"].endswith(f"{KEYS_URL}/{body['id']}")
    assert {"id", "name", "role", "key", "prefix", "created_at"} <= set(body)
    assert body["name"] == "importer" and body["role"] == "sales"
    assert body["key"].startswith(f"crm_{body['prefix']}_")
    assert body["last_used_at"] is None
    # Never again: not in the list, not in the record, not stored.
    listed = client.get(KEYS_URL, headers=admin_headers).get_json()["items"]
    shown = client.get(f"{KEYS_URL}/{body['id']}", headers=admin_headers).get_json()
    for seen in (*listed, shown):
        assert "key" not in seen and "secret_hash" not in seen
        assert body["key"] not in repr(seen)
    assert [item["id"] for item in listed] == [body["id"]]
    record = stored_key(app, body["id"])
    assert body["key"] not in (record.secret_hash, record.prefix)


def test_a_key_opens_forwarded_routes_with_a_bearer_token_of_its_role(
    client, app, calls, admin_headers
):
    key = make_key(client, admin_headers, role="support")

    response = client.get("/api/v1/tickets?status=open", headers=key_header(key["key"]))

    assert response.status_code == 200, response.get_json()
    seen = calls[-1]["headers"]
    assert "X-Api-Key" not in seen and "X-API-Key" not in seen
    scheme, _, token = seen["Authorization"].partition(" ")
    assert scheme == "Bearer"
    settings = app.extensions["crm.settings"]
    signing = signing_key(settings, SERVICE_CALL)  # a service-call token, not an access token
    claims = jwt.decode(token, signing, algorithms=[ALGORITHM], issuer=ISSUER)
    assert claims["kind"] == "api_key"
    assert claims["sub"] == key["id"]
    assert claims["role"] == "support"
    assert claims["exp"] - claims["iat"] <= 60  # short-lived


def test_a_bearer_callers_x_api_key_header_is_not_forwarded(client, app, calls, admin_headers):
    headers = {**admin_headers, "X-API-Key": "crm_000000000000_whatever"}

    assert client.get("/api/v1/contacts", headers=headers).status_code == 200

    assert "X-Api-Key" not in calls[-1]["headers"]
    # The caller goes on as themselves, in a service-call token (never their access token).
    forwarded = calls[-1]["headers"]["Authorization"]
    assert forwarded != admin_headers["Authorization"]
    settings = app.extensions["crm.settings"]
    principal = verify_token(settings, forwarded.removeprefix("Bearer "), SERVICE_CALL)
    assert (principal.role, principal.kind) == ("admin", "user")


def test_last_used_at_is_written_at_most_once_a_minute(client, app, admin_headers, monkeypatch):
    key = make_key(client, admin_headers)
    client.get("/api/v1/contacts", headers=key_header(key["key"]))
    first = stored_key(app, key["id"]).last_used_at
    assert first is not None

    client.get("/api/v1/contacts", headers=key_header(key["key"]))
    assert stored_key(app, key["id"]).last_used_at == first

    later = utcnow() + timedelta(minutes=2)
    monkeypatch.setattr(api_keys, "utcnow", lambda: later)
    client.get("/api/v1/contacts", headers=key_header(key["key"]))
    assert stored_key(app, key["id"]).last_used_at == later
    shown = client.get(f"{KEYS_URL}/{key['id']}", headers=admin_headers).get_json()
    assert shown["last_used_at"].endswith("Z")


def test_a_revoked_key_answers_401(client, app, admin_headers, calls):
    key = make_key(client, admin_headers)
    assert client.get("/api/v1/contacts", headers=key_header(key["key"])).status_code == 200

    assert client.delete(f"{KEYS_URL}/{key['id']}", headers=admin_headers).status_code == 204

    before = len(calls)
    assert_problem(client.get("/api/v1/contacts", headers=key_header(key["key"])), 401)
    assert len(calls) == before
    assert_problem(client.get(f"{KEYS_URL}/{key['id']}", headers=admin_headers), 404)
    assert_problem(client.delete(f"{KEYS_URL}/{key['id']}", headers=admin_headers), 404)
    assert client.get(KEYS_URL, headers=admin_headers).get_json()["items"] == []
    assert stored_key(app, key["id"]).revoked_at is not None


def test_a_viewer_key_reads_but_cannot_write(client, admin_headers, calls):
    key = make_key(client, admin_headers, role="viewer")

    assert client.get("/api/v1/contacts", headers=key_header(key["key"])).status_code == 200
    before = len(calls)
    write = client.post("/api/v1/contacts", json={}, headers=key_header(key["key"]))

    assert_problem(write, 403)
    assert len(calls) == before


@pytest.mark.parametrize(
    "presented",
    ["", "garbage", "crm_", "crm_abc_def", "xyz_000000000000_secret", "crm_000000000000_secret"],
)
def test_keys_that_are_not_ours_answer_401(client, presented):
    response = client.get("/api/v1/contacts", headers={"X-API-Key": presented})

    assert_problem(response, 401)


def test_the_right_prefix_with_a_wrong_secret_answers_401(client, admin_headers):
    key = make_key(client, admin_headers)
    forged = f"crm_{key['prefix']}_{'A' * 43}"

    assert_problem(client.get("/api/v1/contacts", headers=key_header(forged)), 401)


def test_only_a_signed_in_admin_manages_keys(client, admin_headers, get_token, make_user):
    make_user("seller@example.com", role="sales")
    seller = bearer(get_token("seller@example.com", "password-123"))
    admin_key = make_key(client, admin_headers, role="admin")

    assert_problem(client.post(KEYS_URL, json={"name": "k", "role": "viewer"}, headers=seller), 403)
    assert_problem(client.get(KEYS_URL, headers=seller), 403)
    by_key = client.post(
        KEYS_URL, json={"name": "k", "role": "admin"}, headers=key_header(admin_key["key"])
    )
    assert_problem(by_key, 403)
    assert_problem(client.get(KEYS_URL), 401)
    assert_problem(client.post(KEYS_URL, json={"name": "k", "role": "viewer"}), 401)


def test_bad_key_requests_are_4xx_problems(client, admin_headers):
    def post(**kwargs):
        return client.post(KEYS_URL, headers=admin_headers, **kwargs)

    assert_problem(post(data="{nope", content_type="application/json"), 400)
    assert_problem(post(json=["name"]), 400)
    assert {"name", "role"} <= set(assert_problem(post(json={}), 422)["errors"])
    assert "role" in assert_problem(post(json={"name": "k", "role": "root"}), 422)["errors"]
    assert "name" in assert_problem(post(json={"name": "", "role": "sales"}), 422)["errors"]
    unknown = post(json={"name": "k", "role": "sales", "key": "mine"})
    assert "key" in assert_problem(unknown, 422)["errors"]
    listing = client.get(f"{KEYS_URL}?owner=me", headers=admin_headers)
    assert "owner" in assert_problem(listing, 422)["errors"]
    assert_problem(client.get(f"{KEYS_URL}?limit=0", headers=admin_headers), 422)
    assert_problem(client.get(f"{KEYS_URL}?sort=secret_hash", headers=admin_headers), 422)
    assert_problem(client.get(f"{KEYS_URL}?cursor=bogus", headers=admin_headers), 422)
    assert_problem(client.get(f"{KEYS_URL}/no-such-key", headers=admin_headers), 404)


def test_the_key_list_pages_and_filters_by_role(client, admin_headers):
    made = [make_key(client, admin_headers, f"key-{n}", "sales") for n in range(3)]
    make_key(client, admin_headers, "reader", "viewer")

    first = client.get(f"{KEYS_URL}?role=sales&limit=2&sort=name", headers=admin_headers)
    page = first.get_json()
    assert [item["name"] for item in page["items"]] == ["key-0", "key-1"]
    rest = client.get(
        f"{KEYS_URL}?role=sales&limit=2&sort=name&cursor={page['next_cursor']}",
        headers=admin_headers,
    ).get_json()
    assert [item["name"] for item in rest["items"]] == ["key-2"]
    assert rest["next_cursor"] is None
    assert {item["id"] for item in page["items"] + rest["items"]} == {k["id"] for k in made}


def test_services_accept_no_api_key_only_bearer_tokens():
    """A caller going around the gateway with a key gets nothing: protect stays Bearer-only."""
    service = Flask("service")
    settings = load_settings("contacts")
    init_app(service, settings, None)
    protect(service, settings)
    service.add_url_rule("/api/v1/contacts", "contacts", lambda: jsonify([]))

    response = service.test_client().get("/api/v1/contacts", headers={"X-API-Key": "crm_x_y"})

    assert_problem(response, 401)


def test_stored_keys_hold_no_secret_in_the_clear(client, app, admin_headers):
    key = make_key(client, admin_headers)

    with app.extensions["crm.db"].session() as session:
        record = session.scalars(select(ApiKey)).one()
    secret = key["key"].split("_", 2)[2]
    assert record.secret_hash == api_keys.secret_digest(secret) != secret


def test_me_describes_the_key_a_call_is_made_with(client, admin_headers):
    key = make_key(client, admin_headers, name="crm-sync", role="marketing")

    response = client.get("/api/v1/me", headers=key_header(key["key"]))

    assert response.status_code == 200
    body = response.get_json()
    assert body["kind"] == "api_key"
    assert (body["id"], body["name"], body["role"]) == (key["id"], "crm-sync", "marketing")
    assert "key" not in body
