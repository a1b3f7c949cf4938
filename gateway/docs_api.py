"""The public API's description: `GET /api/v1/openapi.json` and the docs page `GET /docs`.

The document is the gateway's own merged with every service's (`GET /openapi.json` on
each, asked in parallel with the short view timeout and the circuit breakers). It is kept
for a minute; one missing a service is kept only a few seconds, so a service back up
is soon listed again. A service that does not answer is left out and named in
`x-unavailable`: the rest of the document is still served.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

from gateway.breaker import BREAKERS
from gateway.fanout import Call, Fanout, ServiceClient
from gateway.openapi_merge import UNAVAILABLE, merge_documents
from gateway.proxy import HTTP_SESSION, ROUTES
from shared.openapi import SPEC_PATH, app_document, init_openapi
from shared.web import current_settings

DOCUMENT_PATH = "/api/v1/openapi.json"
CACHE_SECONDS = 60.0
# A document without some service is kept a short while only: it is soon asked again.
INCOMPLETE_CACHE_SECONDS = 5.0
_CACHE = "gateway.openapi_cache"
_PUBLIC_PREFIXES = "gateway.public_prefixes"
# The gateway's own paths in the public document: its API, health and this page (not
# /ready and /metrics: they answer only on the internal listener).
OWN_PREFIXES = ("/api/", "/health", "/docs")
CDN = "https://cdn.jsdelivr.net"
SWAGGER_UI = f"{CDN}/npm/swagger-ui-dist@5"
# The page loads Swagger UI from the CDN and fetches the document and "try it out" calls
# from here; its one inline script is allowed by a nonce of each answer.
DOCS_POLICY = (
    "default-src 'none'; script-src {cdn} 'nonce-{nonce}'; style-src {cdn} 'unsafe-inline'; "
    "img-src 'self' data: {cdn}; connect-src 'self'; frame-ancestors 'none'"
)
DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>CRM API</title>
  <link rel="stylesheet" href="{ui}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ui}/swagger-ui-bundle.js" crossorigin="anonymous"></script>
  <script nonce="{nonce}">
    window.ui = SwaggerUIBundle({{url: "{document}", dom_id: "#swagger-ui", validatorUrl: null}});
  </script>
</body>
</html>
"""

docs_api = Blueprint("docs", __name__)


def time_to_keep(document: dict[str, Any]) -> float:
    """Seconds a document stays fresh: a minute, or a few seconds if a service is missing."""
    return INCOMPLETE_CACHE_SECONDS if document.get(UNAVAILABLE) else CACHE_SECONDS


class DocumentCache:
    """The merged document of this process, rebuilt when stale (one rebuild at a time)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._document: dict[str, Any] | None = None
        self._expires = 0.0

    def get(self, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:  # callers arriving mid-rebuild wait for it rather than ask again
            if self._document is None or self._clock() >= self._expires:
                document = build()
                ttl = time_to_keep(document)
                self._document, self._expires = document, self._clock() + ttl
            return self._document


def fetch_service_documents() -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each forwarded-to service's own document, and the services that gave none."""
    settings = current_settings()
    client = ServiceClient(
        http=current_app.extensions[HTTP_SESSION],
        service_urls=settings.service_urls,
        headers={"Accept": "application/json"},
        breakers=current_app.extensions[BREAKERS],
        timeout=settings.view_timeout_seconds,
    )
    documents: dict[str, dict[str, Any]] = {}
    unavailable: list[str] = []
    with Fanout(client) as fanout:
        futures = {name: fanout.submit(Call(name, SPEC_PATH)) for name in set(ROUTES.values())}
        for name, future in futures.items():
            answer = fanout.result(future)
            if answer.ok and isinstance(answer.body, dict) and "paths" in answer.body:
                documents[name] = answer.body
            else:
                unavailable.append(name)
    return documents, unavailable


def merged_document() -> dict[str, Any]:
    """The gateway's document merged with the services' that answered."""
    documents, unavailable = fetch_service_documents()
    return merge_documents(
        app_document(current_app),
        documents,
        unavailable,
        routes=ROUTES,
        public_prefixes=current_app.extensions[_PUBLIC_PREFIXES],
    )


@docs_api.get(DOCUMENT_PATH)
def openapi_document() -> Response:
    """The OpenAPI 3 document of the whole public API (no token needed)."""
    document = current_app.extensions[_CACHE].get(merged_document)
    response = jsonify(document)
    response.headers["Cache-Control"] = f"public, max-age={int(time_to_keep(document))}"
    return response


@docs_api.get("/docs")
def docs_page() -> Response:
    """Interactive API documentation (Swagger UI) of the OpenAPI document."""
    nonce = secrets.token_urlsafe(16)
    page = DOCS_PAGE.format(ui=SWAGGER_UI, document=DOCUMENT_PATH, nonce=nonce)
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCS_POLICY.format(cdn=CDN, nonce=nonce)
    return response


def init_docs(app: Flask, public_prefixes: tuple[str, ...]) -> None:
    """Serve the gateway's own document (`/openapi.json`), the merged one and the docs page.

    `public_prefixes` are the /api paths the gateway serves without a token.
    """
    init_openapi(
        app,
        public_prefixes=public_prefixes,
        prefixes=OWN_PREFIXES,
        skip_blueprints=("proxy",),  # the services document what they answer
    )
    app.extensions[_PUBLIC_PREFIXES] = public_prefixes
    app.extensions[_CACHE] = DocumentCache()
    app.register_blueprint(docs_api)
