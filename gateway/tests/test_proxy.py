"""Forwarding to the services, against a real HTTP upstream on a local port."""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from gateway.app import create_app
from gateway.proxy import ROUTES, upstream_path
from gateway.tests.conftest import bearer, close_app, ensure_account, gateway_config
from shared.auth import Principal, issue_token, verify_token
from shared.keys import SERVICE_CALL
from shared.web import ApiError

EXPORT_CHUNK = b"id,first_name,last_name,email\n" + b"x" * (64 * 1024 - 30)
EXPORT_CHUNKS = 128  # 8 MiB


@dataclass
class Upstream:
    """A stand-in contacts service: it echoes what it got and remembers every call."""

    url: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    first_chunk_read: threading.Event = field(default_factory=threading.Event)
    export_waited_in_vain: bool = False


def _upstream_app(state: Upstream) -> Flask:
    app = Flask("upstream")

    @app.get("/api/v1/contacts/export")
    def export() -> Response:
        def rows() -> Iterator[bytes]:
            yield EXPORT_CHUNK
            # Streaming means the client holds the first chunk before the last is made.
            state.export_waited_in_vain = not state.first_chunk_read.wait(5)
            for _ in range(EXPORT_CHUNKS - 1):
                yield EXPORT_CHUNK

        headers = {"Content-Disposition": 'attachment; filename="contacts.csv"'}
        return Response(rows(), mimetype="text/csv", headers=headers)

    @app.get("/api/v1/contacts/slow")
    def slow() -> Response:
        time.sleep(1.5)
        return jsonify({})

    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def echo(path: str) -> Response:
        body = request.get_data()
        call = {
            "method": request.method,
            "path": request.path,
            "query": request.query_string.decode(),
            "headers": dict(request.headers),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body": body.decode() if len(body) < 4096 else None,
        }
        state.calls.append(call)
        response = jsonify(call)
        response.status_code = int(request.headers.get("X-Echo-Status", "200"))
        if request.method == "POST":
            response.status_code = 201
            response.headers["Location"] = "/api/v1/contacts/c-1"
        response.headers["ETag"] = '"v7"'
        if response.status_code in (429, 503):
            response.headers["Retry-After"] = "3"
        return response

    return app


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    state = Upstream()
    server = make_server("127.0.0.1", 0, _upstream_app(state), threaded=True)
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _gateway(tmp_path, contacts_url: str, **overrides: Any) -> Flask:
    config = gateway_config(
        f"sqlite:///{tmp_path / 'gateway.db'}",
        # One stand-in answers for every service.
        service_urls=dict.fromkeys(set(ROUTES.values()), contacts_url),
    )
    return create_app({**config, **overrides})


@pytest.fixture
def gateway(tmp_path, upstream: Upstream) -> Iterator[Flask]:
    upstream.calls.clear()
    app = _gateway(tmp_path, upstream.url)
    yield app
    close_app(app)


@pytest.fixture
def client(gateway: Flask):
    return gateway.test_client()


def token_for(app: Flask, role: str) -> dict[str, str]:
    principal = Principal(f"{role}-id", role, f"{role}@example.com")
    ensure_account(app, principal.subject, role)
    return bearer(issue_token(app.extensions["crm.settings"], principal))


def test_the_route_table_sends_contacts_paths_to_the_contacts_service():
    for prefix in (
        "/api/v1/contacts",
        "/api/v1/companies",
        "/api/v1/custom-fields",
        "/api/v1/tags",
    ):
        assert ROUTES[prefix] == "contacts"


def test_the_route_table_sends_sales_paths_to_the_sales_service():
    for prefix in (
        "/api/v1/leads",
        "/api/v1/lead-scoring-rules",
        "/api/v1/forms/leads",
        "/api/v1/pipelines",
        "/api/v1/deals",
        "/api/v1/tasks",
        "/api/v1/reports/pipeline",
        "/api/v1/reports/forecast",
        "/api/v1/reports/win-rate",
        "/api/v1/reports/funnel",
        "/api/v1/reports/sales-cycle",
    ):
        assert ROUTES[prefix] == "sales"


def test_the_route_table_sends_support_paths_to_the_support_service():
    for prefix in ("/api/v1/tickets", "/api/v1/sla-policies", "/api/v1/reports/support"):
        assert ROUTES[prefix] == "support"


def test_the_route_table_sends_notifications_paths_to_notifications():
    for prefix in ("/api/v1/templates", "/api/v1/messages", "/api/v1/reminders", "/t"):
        assert ROUTES[prefix] == "notifications"


def test_the_route_table_sends_marketing_paths_to_marketing():
    marketing = ("/api/v1/segments", "/api/v1/subscriptions", "/api/v1/suppressions")
    more = ("/api/v1/campaigns", "/api/v1/automations", "/api/v1/reports/marketing")
    for prefix in (*marketing, "/api/v1/subscription-lists", *more):
        assert ROUTES[prefix] == "marketing"


def test_unsubscribe_and_opt_in_links_are_forwarded_without_a_token(client, upstream):
    assert client.get("/api/v1/unsubscribe/some-token").status_code == 200
    assert client.post("/api/v1/unsubscribe/some-token").status_code == 201  # the fake upstream
    assert client.get("/api/v1/subscriptions/confirm/some-token").status_code == 200
    assert client.get("/api/v1/subscriptions").status_code == 401
    paths = [call["path"] for call in upstream.calls[-3:]]
    assert paths == ["/api/v1/unsubscribe/some-token"] * 2 + [
        "/api/v1/subscriptions/confirm/some-token"
    ]


def test_tracking_paths_are_forwarded_without_a_token(client, upstream):
    assert client.get("/t/o/some-token.gif").status_code == 200
    assert client.get("/t/c/some-token").status_code == 200
    assert [call["path"] for call in upstream.calls[-2:]] == [
        "/t/o/some-token.gif",
        "/t/c/some-token",
    ]


def test_a_signed_csat_link_is_forwarded_without_a_token(client, upstream):
    response = client.post("/api/v1/csat/some-signed-token", data={"rating": "5"})

    assert response.status_code == 201
    assert upstream.calls[-1]["path"] == "/api/v1/csat/some-signed-token"


def test_the_public_lead_form_is_forwarded_without_a_token(client, upstream):
    response = client.post("/api/v1/forms/leads", data={"email": "web@example.com"})

    assert response.status_code == 201
    seen = response.get_json()
    assert seen["path"] == "/api/v1/forms/leads"
    assert "Authorization" not in seen["headers"]
    assert seen["headers"]["X-Forwarded-For"]


def test_other_paths_still_need_a_token(client, upstream):
    assert client.get("/api/v1/deals").status_code == 401
    assert client.get("/api/v1/forms/../deals").status_code == 400  # see test_dot_segments_...


def test_a_write_is_forwarded_with_method_path_query_body_and_headers(client, gateway, upstream):
    headers = {**token_for(gateway, "sales"), "X-Request-ID": "req-42"}

    response = client.post(
        "/api/v1/contacts/a%20b/notes?x=1&tag=a&tag=b&q=caf%C3%A9",
        json={"body": "Called, left a message"},
        headers=headers,
    )

    assert response.status_code == 201
    assert response.headers["Location"] == "/api/v1/contacts/c-1"
    assert response.headers["ETag"] == '"v7"'
    assert response.headers["X-Request-ID"] == "req-42"
    seen = response.get_json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/api/v1/contacts/a b/notes"
    assert seen["query"] == "x=1&tag=a&tag=b&q=caf%C3%A9"
    assert seen["body"] == '{"body": "Called, left a message"}'
    # Not the client's access token: a service-call token naming the same caller.
    forwarded = seen["headers"]["Authorization"].removeprefix("Bearer ")
    assert f"Bearer {forwarded}" != headers["Authorization"]
    settings = gateway.extensions["crm.settings"]
    assert verify_token(settings, forwarded, SERVICE_CALL).role == "sales"
    assert seen["headers"]["X-Request-Id"] == "req-42"
    assert seen["headers"]["Content-Type"] == "application/json"


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
def test_every_method_and_every_routed_prefix_is_forwarded(client, gateway, method):
    for prefix in ROUTES:
        response = client.open(f"{prefix}/x1", method=method, headers=token_for(gateway, "admin"))

        assert response.status_code == 200
        assert response.get_json()["method"] == method
        assert response.get_json()["path"] == f"{prefix}/x1"


def test_a_request_id_is_made_and_sent_upstream_when_the_client_has_none(client, gateway):
    response = client.get("/api/v1/tags", headers=token_for(gateway, "viewer"))

    sent = response.get_json()["headers"]["X-Request-Id"]
    assert sent and response.headers["X-Request-ID"] == sent


def test_hop_by_hop_headers_are_not_forwarded(client, gateway):
    headers = {**token_for(gateway, "sales"), "Connection": "close, X-Hop", "X-Hop": "secret"}

    seen = client.get("/api/v1/contacts", headers=headers).get_json()["headers"]

    assert "X-Hop" not in seen and seen.get("Connection") != "close, X-Hop"
    assert "X-Forwarded-For" in seen


def test_the_upstream_status_and_retry_after_pass_through(client, gateway):
    headers = {**token_for(gateway, "sales"), "X-Echo-Status": "429"}

    response = client.get("/api/v1/companies", headers=headers)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}])
def test_without_a_valid_token_the_upstream_is_not_called(client, upstream, headers):
    response = client.get("/api/v1/contacts", headers=headers)

    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert upstream.calls == []


def test_a_viewer_may_read_but_not_write(client, gateway, upstream):
    viewer = token_for(gateway, "viewer")

    assert client.get("/api/v1/contacts", headers=viewer).status_code == 200
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        response = client.open("/api/v1/contacts/c-1", method=method, json={}, headers=viewer)
        assert response.status_code == 403
    assert [call["method"] for call in upstream.calls] == ["GET"]


def test_a_viewer_may_search_and_batch_read_but_not_batch_write(client, gateway, upstream):
    viewer = token_for(gateway, "viewer")

    assert client.post("/api/v1/deals/search", json={}, headers=viewer).status_code == 201
    assert client.post("/api/v1/leads/batch/read", json={}, headers=viewer).status_code == 201
    assert client.post("/api/v1/deals/batch/create", json={}, headers=viewer).status_code == 403
    assert [call["path"] for call in upstream.calls] == [
        "/api/v1/deals/search",
        "/api/v1/leads/batch/read",
    ]


def test_a_large_upload_is_forwarded_intact(client, gateway):
    body = b"first_name,email\n" + b"Ann,ann@example.com\n" * 200_000

    response = client.post(
        "/api/v1/contacts/import",
        data=body,
        content_type="text/csv",
        headers=token_for(gateway, "sales"),
    )

    assert response.status_code == 201
    assert response.get_json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_a_large_export_is_streamed_back(client, gateway, upstream):
    upstream.first_chunk_read.clear()

    response = client.get(
        "/api/v1/contacts/export", headers=token_for(gateway, "viewer"), buffered=False
    )
    digest, size = hashlib.sha256(), 0
    for chunk in response.response:
        upstream.first_chunk_read.set()
        digest.update(chunk)
        size += len(chunk)
    response.close()

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="contacts.csv"'
    assert "Transfer-Encoding" not in response.headers
    assert size == len(EXPORT_CHUNK) * EXPORT_CHUNKS
    assert digest.hexdigest() == hashlib.sha256(EXPORT_CHUNK * EXPORT_CHUNKS).hexdigest()
    assert not upstream.export_waited_in_vain


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_service_that_is_down_is_503_naming_it(tmp_path):
    app = _gateway(tmp_path, f"http://127.0.0.1:{_closed_port()}")
    try:
        response = app.test_client().get("/api/v1/contacts", headers=token_for(app, "sales"))
    finally:
        close_app(app)

    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["title"] == "Service Unavailable"
    assert body["detail"] == "The contacts service is unavailable"


def test_a_service_that_is_too_slow_is_504(tmp_path, upstream):
    app = _gateway(tmp_path, upstream.url, http_timeout_seconds=0.3)
    try:
        started = time.monotonic()
        response = app.test_client().get("/api/v1/contacts/slow", headers=token_for(app, "sales"))
        elapsed = time.monotonic() - started
    finally:
        close_app(app)

    assert response.status_code == 504
    assert response.mimetype == "application/problem+json"
    assert "contacts" in response.get_json()["detail"]
    assert elapsed < 1.4


def _answering_server(answer: bytes) -> tuple[socket.socket, threading.Thread]:
    """A server that reads one request, sends `answer` and hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_a_service_that_breaks_off_a_small_answer_is_502(tmp_path):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    listener, thread = _answering_server(head + b'{"id": "c-1"')
    port = listener.getsockname()[1]
    app = _gateway(tmp_path, f"http://127.0.0.1:{port}")
    try:
        response = app.test_client().get("/api/v1/contacts/c-1", headers=token_for(app, "sales"))
    finally:
        close_app(app)
        thread.join(5)
        listener.close()

    assert response.status_code == 502
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"] == "The contacts service gave no valid answer"


def test_a_small_answer_is_relayed_whole_with_its_headers(client, gateway, upstream):
    response = client.get("/api/v1/contacts/c-9?x=1", headers=token_for(gateway, "admin"))

    assert response.status_code == 200
    assert response.headers["ETag"] == '"v7"'
    assert int(response.headers["Content-Length"]) == len(response.data)
    assert response.get_json()["path"] == "/api/v1/contacts/c-9"


def test_paths_outside_the_route_table_are_not_forwarded(client, gateway, upstream):
    response = client.get("/api/v1/contacts-old", headers=token_for(gateway, "admin"))

    assert response.status_code == 404
    assert upstream.calls == []


def test_an_oversize_body_is_413_before_the_upstream_is_called(tmp_path, upstream):
    upstream.calls.clear()
    app = _gateway(tmp_path, upstream.url, max_body_bytes=1024)
    try:
        response = app.test_client().post(
            "/api/v1/contacts", data=b"x" * 4096, headers=token_for(app, "sales")
        )
    finally:
        close_app(app)

    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert upstream.calls == []


# Paths a client that normalises nothing sends: each would reach another route upstream
# (urllib3 collapses `..`) or another meaning after a second decoding.
UNNORMALISED_PATHS = [
    "/t/%2e%2e/api/v1/webhooks",
    "/t/%2E%2E/api/v1/webhooks",
    "/t/..%2fapi/v1/webhooks",
    "/t/%2e%2e%2fapi/v1/webhooks",
    "/api/v1/forms/leads/%2e%2e/%2e%2e/deals",
    "/api/v1/csat/%2e%2e/tickets",
    "/t/%2e%2e/metrics",
    "/t/../api/v1/webhooks",
    "/api/v1/contacts/./x",
    "/api/v1/contacts//x",  # (a leading `//` only under gunicorn: see tests/security)
    "/t/%5c..%5capi/v1/webhooks",
    "/t/..\\api/v1/webhooks",
    "/t/%252e%252e/api/v1/webhooks",
    "/api/v1/contacts/%252fx",
]


def _raw_request(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """Send `path` byte for byte (http.client normalises nothing); (status, content type)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in {**headers, "Content-Length": "2"}.items():
            connection.putheader(name, value)
        connection.endheaders(b"{}")
        answer = connection.getresponse()
        answer.read()
        return answer.status, answer.getheader("Content-Type", "")
    finally:
        connection.close()


@pytest.fixture
def served_gateway(gateway: Flask) -> Iterator[int]:
    """The gateway on a real local HTTP server (werkzeug's): its port."""
    server = make_server("127.0.0.1", 0, gateway, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", UNNORMALISED_PATHS)
def test_dot_segments_and_double_encoding_are_400_and_reach_no_service(
    served_gateway, gateway, upstream, path
):
    for method, headers in (("POST", token_for(gateway, "admin")), ("GET", {})):
        status, content_type = _raw_request(served_gateway, method, path, headers)

        assert (status, content_type) == (400, "application/problem+json"), (method, path)
    assert upstream.calls == []


def test_the_upstream_path_is_the_matched_prefix_and_a_checked_remainder(gateway):
    with gateway.test_request_context("/t/x"):
        assert upstream_path("/t", "c/a b") == "/t/c/a b"
        assert upstream_path("/api/v1/csat", "") == "/api/v1/csat"
        for rest in ("../api/v1/webhooks", "./x", "a//b", "a\\b", "%2e%2e"):
            with pytest.raises(ApiError) as refused:
                upstream_path("/t", rest)
            assert refused.value.status == 400


def test_a_normal_path_with_a_trailing_slash_or_encoded_text_is_still_forwarded(
    client, gateway, upstream
):
    headers = token_for(gateway, "admin")

    assert client.get("/api/v1/contacts/", headers=headers).status_code == 200
    assert client.get("/api/v1/tags/50%25%20off", headers=headers).status_code == 200
    assert [call["path"] for call in upstream.calls] == [
        "/api/v1/contacts",
        "/api/v1/tags/50% off",
    ]
