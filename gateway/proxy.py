"""Forwarding of `/api/v1/...` to the service that owns the resource.

The caller's token was already verified (shared.auth.protect); here the request goes on
with its method, path, query, headers and body streamed, and the answer comes back
streamed too, so a large CSV export never sits in the gateway's memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import urllib3
from flask import Blueprint, Flask, Response, g, request
from werkzeug.datastructures import Headers

from gateway.breaker import breaker_for, init_breakers
from gateway.service_tokens import service_token
from gateway.upstream import TIMED_OUT, UNREACHABLE, HTTPError, Upstream, UpstreamError
from shared.auth import API_KEY_HEADER
from shared.web import REQUEST_ID_HEADER, ApiError, current_settings, path_problem

log = logging.getLogger(__name__)

# Path prefix -> the service that owns it. A new service adds one line here.
ROUTES: dict[str, str] = {
    "/api/v1/contacts": "contacts",
    "/api/v1/companies": "contacts",
    "/api/v1/custom-fields": "contacts",
    "/api/v1/tags": "contacts",
    "/api/v1/leads": "sales",
    "/api/v1/lead-scoring-rules": "sales",
    "/api/v1/forms/leads": "sales",
    "/api/v1/pipelines": "sales",
    "/api/v1/deals": "sales",
    "/api/v1/tasks": "sales",
    "/api/v1/reports/pipeline": "sales",
    "/api/v1/reports/forecast": "sales",
    "/api/v1/reports/win-rate": "sales",
    "/api/v1/reports/funnel": "sales",
    "/api/v1/reports/sales-cycle": "sales",
    "/api/v1/tickets": "support",
    "/api/v1/sla-policies": "support",
    "/api/v1/csat": "support",
    "/api/v1/reports/support": "support",
    "/api/v1/templates": "notifications",
    "/api/v1/messages": "notifications",
    "/api/v1/reminders": "notifications",
    "/api/v1/webhooks": "notifications",
    # Open pixel and click redirect: public (outside /api), the tokens are signed.
    "/t": "notifications",
    "/api/v1/segments": "marketing",
    "/api/v1/subscriptions": "marketing",
    "/api/v1/subscription-lists": "marketing",
    "/api/v1/suppressions": "marketing",
    "/api/v1/unsubscribe": "marketing",
    "/api/v1/campaigns": "marketing",
    "/api/v1/automations": "marketing",
    "/api/v1/reports/marketing": "marketing",
    # Each service's export of one person (admin only), composed by /customers/{id}/export.
    "/api/v1/subject-exports/contacts": "contacts",
    "/api/v1/subject-exports/sales": "sales",
    "/api/v1/subject-exports/support": "support",
    "/api/v1/subject-exports/marketing": "marketing",
    "/api/v1/subject-exports/notifications": "notifications",
}

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Uploads and downloads of whole tables may pause longer between bytes than a normal call.
LONG_RUNNING_SUFFIXES = ("/import", "/export")
LONG_READ_TIMEOUT_SECONDS = 300.0
CHUNK_BYTES = 64 * 1024
# RFC 9110 hop-by-hop headers: they describe one connection, never the next one.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# A client's credentials stop here: every call goes on with a service-call token instead.
NOT_FORWARDED = HOP_BY_HOP | {
    "host",
    "content-length",
    "authorization",
    REQUEST_ID_HEADER.lower(),
    API_KEY_HEADER.lower(),
}
NOT_RETURNED = HOP_BY_HOP | {"server", "date", REQUEST_ID_HEADER.lower()}
HTTP_SESSION = "gateway.http"


def _skipped_by_connection(headers: Any) -> set[str]:
    listed = headers.get("Connection", "")
    return {name.strip().lower() for name in listed.split(",") if name.strip()}


def upstream_headers() -> dict[str, str]:
    """The caller's end-to-end headers, plus the request id and X-Forwarded-*."""
    skip = NOT_FORWARDED | _skipped_by_connection(request.headers)
    headers = {name: value for name, value in request.headers if name.lower() not in skip}
    headers[REQUEST_ID_HEADER] = g.request_id
    forwarded_for = request.headers.get("X-Forwarded-For")
    client = request.remote_addr or "unknown"
    headers["X-Forwarded-For"] = f"{forwarded_for}, {client}" if forwarded_for else client
    headers.setdefault("X-Forwarded-Proto", request.scheme)
    headers.setdefault("X-Forwarded-Host", request.host)
    principal = g.get("principal")
    if principal is not None:  # the caller as the account check left it (gateway.accounts)
        headers["Authorization"] = f"Bearer {service_token(current_settings(), principal)}"
    return headers


def upstream_path(prefix: str, rest: str) -> str:
    """The path asked of the service: the matched prefix and the remainder, checked again.

    Built from these two and never from the request's path, so nothing but a route of
    ROUTES reaches a service (shared.web refused dot segments already; this holds even if
    that check is ever bypassed).
    """
    if not rest:
        return prefix
    refused = path_problem(f"/{rest}")
    if refused:
        raise ApiError(400, "Bad Request", f"The URL path holds {refused}")
    return f"{prefix}/{rest}"


def upstream_url(base_url: str, path: str) -> str:
    """The service's URL of `path` (decoded; encoded again here) and the request's query."""
    quoted = quote(path, safe="/:@!$&'()*+,;=")
    query = request.query_string.decode("latin-1")
    return f"{base_url.rstrip('/')}{quoted}" + (f"?{query}" if query else "")


class _RequestBody:
    """The caller's body as a stream, read in chunks as it goes upstream (never buffered)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)


def request_body(headers: dict[str, str]) -> tuple[Any, bool]:
    """What to send upstream, and whether chunked: nothing, a stream of known length
    (its Content-Length set in `headers`), or chunks."""
    length = request.content_length
    if length is not None:
        if not length:
            return None, False
        headers["Content-Length"] = str(length)
        return _RequestBody(request.stream), False
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        return _RequestBody(request.stream), True
    return None, False


def timeouts(connect_seconds: float) -> tuple[float, float]:
    """(connect, read) timeouts; imports and exports may read for longer."""
    if request.path.rstrip("/").endswith(LONG_RUNNING_SUFFIXES):
        return connect_seconds, max(connect_seconds, LONG_READ_TIMEOUT_SECONDS)
    return connect_seconds, connect_seconds


def unavailable(service: str) -> ApiError:
    return ApiError(503, "Service Unavailable", f"The {service} service is unavailable")


def call_service(http: Upstream, service: str, path: str) -> urllib3.BaseHTTPResponse:
    """Send the current request to `path` of a service; 503 if it is down, 504 if slow."""
    settings = current_settings()
    base_url = settings.service_urls.get(service)
    if not base_url:
        log.error("no URL is configured for the %s service", service)
        raise unavailable(service)
    breaker = breaker_for(service)
    breaker.guard()  # fails fast (503, Retry-After) while the service's circuit is open
    headers = upstream_headers()
    body, chunked = request_body(headers)
    try:
        upstream = http.send(
            request.method,
            upstream_url(base_url, path),
            headers=headers,
            body=body,
            chunked=chunked,
            stream=True,
            timeout=timeouts(settings.http_timeout_seconds),
        )
    except UpstreamError as error:
        breaker.record_failure()
        raise _failure_answer(error, service) from None
    breaker.record_status(upstream.status)
    return upstream


def _failure_answer(error: UpstreamError, service: str) -> ApiError:
    if error.kind == TIMED_OUT:
        log.warning("the %s service timed out on %s %s", service, request.method, request.path)
        return ApiError(504, "Gateway Timeout", f"The {service} service did not answer in time")
    if error.kind == UNREACHABLE:
        log.warning("the %s service is unreachable: %s", service, type(error.cause).__name__)
        return unavailable(service)
    log.warning("the call to the %s service failed: %s", service, type(error.cause).__name__)
    return ApiError(502, "Bad Gateway", f"The {service} service gave no valid answer")


def _stream_back(upstream: urllib3.BaseHTTPResponse, service: str) -> Iterator[bytes]:
    try:
        # Raw bytes: a compressed answer stays compressed, matching its Content-Encoding.
        yield from upstream.stream(CHUNK_BYTES, decode_content=False)
    except (HTTPError, OSError) as error:
        # Headers are gone already; all that is left is to cut the answer short.
        log.warning("the %s service broke off its answer: %s", service, type(error).__name__)
    finally:  # a body read to its end gave its connection back to the pool already
        upstream.close()


def relay_response(upstream: urllib3.BaseHTTPResponse, service: str) -> Response:
    """The service's answer as the gateway's: status, end-to-end headers, streamed body."""
    skip = NOT_RETURNED | _skipped_by_connection(upstream.headers)
    headers = Headers()
    for name, value in upstream.headers.items():
        if name.lower() not in skip:
            headers.add(name, value)
    length = upstream.headers.get("Content-Length", "")
    if length.isdigit() and int(length) <= CHUNK_BYTES:
        # A small answer (most are) is read at once: cheaper than relaying it as a stream.
        response = Response(_read_whole(upstream, service), status=upstream.status)
    else:
        response = Response(_stream_back(upstream, service), status=upstream.status)
        response.call_on_close(upstream.close)
    response.headers = headers
    return response


def _read_whole(upstream: urllib3.BaseHTTPResponse, service: str) -> bytes:
    try:
        return upstream.read(decode_content=False)
    except (HTTPError, OSError) as error:
        log.warning("the %s service broke off its answer: %s", service, type(error).__name__)
        raise ApiError(502, "Bad Gateway", f"The {service} service gave no valid answer") from None
    finally:
        upstream.close()


def _forwarder(http: Upstream, prefix: str, service: str) -> Callable[..., Response]:
    def forward(rest: str = "") -> Response:
        path = upstream_path(prefix, rest)
        return relay_response(call_service(http, service, path), service)

    return forward


def proxy_blueprint(http: Upstream) -> Blueprint:
    """Routes that forward every path under ROUTES' prefixes to its service."""
    bp = Blueprint("proxy", __name__)
    for prefix, service in ROUTES.items():
        view = _forwarder(http, prefix, service)
        endpoint = "forward" + prefix.removeprefix("/api/v1").replace("/", "_").replace("-", "_")
        bp.add_url_rule(prefix, endpoint, view, methods=METHODS)
        bp.add_url_rule(f"{prefix}/<path:rest>", f"{endpoint}_rest", view, methods=METHODS)
    return bp


def init_proxy(app: Flask) -> None:
    """Give the app its pooled HTTP client and the forwarding routes."""
    http = Upstream()
    app.extensions[HTTP_SESSION] = http
    init_breakers(app, app.extensions["crm.settings"])
    app.register_blueprint(proxy_blueprint(http))
