"""Security headers, CORS, the body limit and answers that give nothing internal away."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from gateway.app import create_app
from gateway.tests.conftest import close_app, ensure_account, gateway_config
from gateway.tests.fake_services import closed_port
from gateway.tests.gunicorn_gateway import gunicorn_gateway
from shared.auth import Principal, issue_token
from shared.config import SERVICE_PORTS, load_settings

APP_ORIGIN = "https://app.example.com"
JSON_CSP = "default-src 'none'; frame-ancestors 'none'"


@pytest.fixture
def make_app(tmp_path) -> Iterator[Callable[..., Flask]]:
    """A gateway on SQLite whose services are at `service_url` (default: a closed port)."""
    apps: list[Flask] = []

    def make(service_url: str | None = None, **extra: Any) -> Flask:
        url = service_url or f"http://127.0.0.1:{closed_port()}"
        config = gateway_config(
            f"sqlite:///{tmp_path / f'gateway{len(apps)}.db'}",
            extra={**load_settings("gateway").extra, **extra},
            service_urls=dict.fromkeys(SERVICE_PORTS, url),
        )
        app = create_app(config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_app(app)


def auth(app: Flask, role: str = "admin") -> dict[str, str]:
    ensure_account(app, f"{role}-1", role)
    token = issue_token(app.extensions["crm.settings"], Principal(f"{role}-1", role))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def upstream() -> Iterator[dict[str, Any]]:
    """A live stand-in for every service: answers anything, notes the body sizes it got."""
    state: dict[str, Any] = {"sizes": []}
    service = Flask("upstream")

    @service.route("/<path:path>", methods=["GET", "POST"])
    def anything(path: str) -> Response:
        size = len(request.get_data())
        state["sizes"].append(size)
        return jsonify({"size": size}), 201 if request.method == "POST" else 200

    server = make_server("127.0.0.1", 0, service, threaded=True)
    state["url"] = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def assert_security_headers(response) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Content-Security-Policy"] == JSON_CSP


def test_every_answer_carries_the_security_headers(make_app, upstream):
    app = make_app()
    client = app.test_client()
    served = make_app(upstream["url"])

    answers = [
        client.get("/health"),
        client.get("/api/v1/contacts"),  # 401
        client.get("/no/such/path"),
        client.get("/api/v1/contacts", headers=auth(app)),  # 503: the service is down
        client.get("/t/o/x.gif"),
        served.test_client().get("/api/v1/contacts", headers=auth(served)),
    ]

    assert [answer.status_code for answer in answers] == [200, 401, 404, 503, 503, 200]
    for answer in answers:
        assert_security_headers(answer)
        assert "Strict-Transport-Security" not in answer.headers


def test_a_view_may_set_its_own_content_security_policy(make_app):
    app = make_app()
    page_policy = "default-src 'self'; script-src https://cdn.example.com"

    @app.get("/page")
    def page() -> Response:
        response = Response("<!doctype html><title>docs</title>", mimetype="text/html")
        response.headers["Content-Security-Policy"] = page_policy
        return response

    response = app.test_client().get("/page")

    assert response.headers["Content-Security-Policy"] == page_policy
    assert response.headers["X-Frame-Options"] == "DENY"


def test_hsts_is_sent_only_over_https(make_app):
    client = make_app().test_client()

    secure = client.get("/health", base_url="https://crm.example.com")
    plain = client.get("/health")

    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "Strict-Transport-Security" not in plain.headers


def test_behind_a_trusted_proxy_its_https_counts(make_app):
    behind_proxy = make_app(trusted_proxies=1).test_client()
    exposed = make_app().test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.1"}

    assert "Strict-Transport-Security" in behind_proxy.get("/health", headers=forwarded).headers
    assert "Strict-Transport-Security" not in exposed.get("/health", headers=forwarded).headers


def test_without_configured_origins_no_cors_headers_are_sent(make_app):
    client = make_app().test_client()

    response = client.get("/health", headers={"Origin": APP_ORIGIN})

    assert not [name for name in response.headers.keys() if name.startswith("Access-Control")]
    assert "Origin" not in response.headers.get("Vary", "")


def test_an_allowed_origin_gets_the_cors_headers(make_app, upstream):
    app = make_app(upstream["url"], cors_origins=(APP_ORIGIN, "http://localhost:3000"))

    response = app.test_client().get(
        "/api/v1/contacts", headers={"Origin": APP_ORIGIN, **auth(app)}
    )

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "RateLimit-Remaining" in response.headers["Access-Control-Expose-Headers"]
    assert "Origin" in response.headers["Vary"]


def test_another_origin_gets_no_cors_headers(make_app, upstream):
    app = make_app(upstream["url"], cors_origins=(APP_ORIGIN,))

    response = app.test_client().get(
        "/api/v1/contacts", headers={"Origin": "https://evil.example.net", **auth(app)}
    )

    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers["Vary"]


def test_a_preflight_is_answered_by_the_gateway_without_a_token(make_app, upstream):
    app = make_app(upstream["url"], cors_origins=(APP_ORIGIN,))
    preflight = {
        "Origin": APP_ORIGIN,
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization, if-match, content-type",
    }

    response = app.test_client().options("/api/v1/contacts/c-1", headers=preflight)

    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "PATCH" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"]
    for header in ("Authorization", "Content-Type", "Idempotency-Key", "If-Match", "X-API-Key"):
        assert header in allowed
    assert "X-Request-ID" in allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in response.headers["Vary"]
    assert upstream["sizes"] == []


def test_a_preflight_from_another_origin_gets_no_cors_headers(make_app):
    app = make_app(cors_origins=(APP_ORIGIN,))
    preflight = {"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"}

    response = app.test_client().options("/api/v1/contacts", headers=preflight)

    assert response.status_code == 204
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Methods" not in response.headers


def test_a_chunked_upload_over_the_limit_is_413_and_never_forwarded_whole(make_app, upstream):
    app = make_app(upstream["url"])
    app.config["MAX_CONTENT_LENGTH"] = 1024
    client = app.test_client()
    chunked = {"Transfer-Encoding": "chunked", "Content-Type": "text/csv", **auth(app)}
    # What gunicorn says of a chunked body: it ends the stream; the app may read to the end.
    server_terminated = {"wsgi.input_terminated": True}

    small = client.post(
        "/api/v1/contacts/import",
        data=b"x" * 1000,
        headers=chunked,
        environ_overrides=server_terminated,
    )
    large = client.post(
        "/api/v1/contacts/import",
        data=b"x" * 4096,
        headers=chunked,
        environ_overrides=server_terminated,
    )

    assert small.status_code == 201
    assert small.get_json() == {"size": 1000}
    assert large.status_code == 413
    assert large.mimetype == "application/problem+json"
    assert "1024 bytes" in large.get_json()["detail"]
    # Forwarding streams: the service may see the start of the body, never more than the limit.
    assert upstream["sizes"][0] == 1000
    assert all(size <= 1024 for size in upstream["sizes"][1:])


def test_gunicorn_refuses_a_chunked_body_over_the_limit(tmp_path):
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"{" + b" " * 1022 + b"}"

    with gunicorn_gateway(
        tmp_path, f"sqlite:///{tmp_path / 'gateway.db'}", workers=1, CRM_MAX_BODY_BYTES="2048"
    ) as gateway:
        response = requests.post(
            f"{gateway.url}/api/v1/auth/token",
            data=chunks(),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )

    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/problem+json"


def test_an_unexpected_error_answers_500_without_its_details(make_app):
    app = make_app()

    @app.get("/explode")
    def explode() -> Response:
        raise RuntimeError("cannot reach db.internal.example:5432 as crm_admin")

    response = app.test_client().get("/explode", headers={"X-Request-ID": "req-42"})

    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    assert response.headers["X-Request-ID"] == "req-42"
    text = response.get_data(as_text=True)
    assert "db.internal" not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text


@pytest.mark.parametrize(
    "path", ["/api/v1/contacts", "/api/v1/customers/0b6c7c64-7a3b-4e0e-9a39-1f3a4f1d2a11"]
)
def test_a_down_service_is_not_located_in_the_answer(make_app, path):
    port = closed_port()
    app = make_app(f"http://127.0.0.1:{port}")
    client = app.test_client()

    answers = [client.get(path, headers=auth(app)) for _ in range(7)]  # until the breaker opens

    for answer in answers:
        text = answer.get_data(as_text=True) + str(answer.headers)
        assert str(port) not in text
        assert "127.0.0.1" not in text
        assert "Traceback" not in text


def test_a_chunked_json_body_over_the_limit_is_413_not_a_cut_body(make_app):
    app = make_app()
    app.config["MAX_CONTENT_LENGTH"] = 64
    body = b'{"email": "admin@example.com", "password": "' + b"p" * 100 + b'"}'

    response = app.test_client().post(
        "/api/v1/auth/token",
        data=body,
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
