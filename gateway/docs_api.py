"""The public API's description: `GET /api/v1/openapi.json` and the docs page `GET /docs`.

The page is Swagger UI from its pinned package, served by the gateway under `/docs/static/`
with the script that starts it: nothing comes from another host (it works offline), and
its Content-Security-Policy allows the gateway's own scripts and styles only.

The document is the gateway's own merged with every service's (`GET /openapi.json` on
each, asked in parallel with the short view timeout and the circuit breakers). It is kept
for a minute; one missing a service is kept only a few seconds, so a service back up
is soon listed again. A service that does not answer is left out and named in
`x-unavailable`: the rest of the document is still served.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flask_swagger_ui
from flask import Blueprint, Flask, Response, current_app, jsonify, send_from_directory

from gateway.breaker import BREAKERS
from gateway.fanout import Call, Fanout, ServiceClient
from gateway.openapi_merge import UNAVAILABLE, merge_documents
from gateway.proxy import HTTP_SESSION, ROUTES
from shared.openapi import SPEC_PATH, app_document, init_openapi
from shared.web import current_settings, not_found

DOCUMENT_PATH = "/api/v1/openapi.json"
CACHE_SECONDS = 60.0
# A document without some service is kept a short while only: it is soon asked again.
INCOMPLETE_CACHE_SECONDS = 5.0
_CACHE = "gateway.openapi_cache"
_PUBLIC_PREFIXES = "gateway.public_prefixes"
# The gateway's own paths in the public document: its API, health and this page (not
# /ready and /metrics: they answer only on the internal listener).
OWN_PREFIXES = ("/api/", "/health", "/docs")
# Swagger UI 5 (it reads OpenAPI 3.1, which 4 does not) from its pinned package
# (flask-swagger-ui ships its dist files; only those are used), served here: the page
# loads nothing from another host and works offline.
SWAGGER_UI_DIR = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
SWAGGER_UI_VERSION = (SWAGGER_UI_DIR / "VERSION").read_text().strip().removeprefix("v")
OWN_STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PATH = "/docs/static"
# The files the page loads, and nothing else of the package: name -> (directory, type).
STATIC_FILES = {
    "swagger-ui.css": (SWAGGER_UI_DIR, "text/css"),
    "swagger-ui-bundle.js": (SWAGGER_UI_DIR, "text/javascript"),
    "favicon-32x32.png": (SWAGGER_UI_DIR, "image/png"),
    "docs-init.js": (OWN_STATIC_DIR, "text/javascript"),
}
# The pages' links carry the version of what they load: a new one is a new URL.
_INIT_DIGEST = hashlib.sha256((OWN_STATIC_DIR / "docs-init.js").read_bytes()).hexdigest()
ASSETS_VERSION = f"{SWAGGER_UI_VERSION}.{_INIT_DIGEST[:8]}"
STATIC_MAX_AGE_SECONDS = 24 * 3600
# Everything from the gateway itself: no inline script (the start script is a file), no
# inline style sheet. `data:` images only: Swagger UI's style sheet draws its icons so.
DOCS_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
DOCS_PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>CRM API</title>
  <link rel="stylesheet" href="{STATIC_PATH}/swagger-ui.css?v={ASSETS_VERSION}">
  <link rel="icon" type="image/png" href="{STATIC_PATH}/favicon-32x32.png?v={ASSETS_VERSION}">
</head>
<body>
  <div id="swagger-ui" data-document="{DOCUMENT_PATH}"></div>
  <script src="{STATIC_PATH}/swagger-ui-bundle.js?v={ASSETS_VERSION}"></script>
  <script src="{STATIC_PATH}/docs-init.js?v={ASSETS_VERSION}"></script>
</body>
</html>
"""

docs_api = Blueprint("docs", __name__)
# The page's files: not part of the API, so not in its document.
docs_static = Blueprint("docs_static", __name__)


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
    return merge_with_own(*fetch_service_documents())


def merge_with_own(documents: dict[str, dict[str, Any]], unavailable: list[str]) -> dict[str, Any]:
    """The current app's own document merged with the services' `documents`."""
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
    response = Response(DOCS_PAGE, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCS_POLICY
    return response


@docs_static.get(f"{STATIC_PATH}/<name>")
def static_file(name: str) -> Response:
    """A file the docs page loads: Swagger UI's own, or the script that starts it."""
    if name not in STATIC_FILES:
        raise not_found("File", name)
    directory, mimetype = STATIC_FILES[name]
    return send_from_directory(directory, name, mimetype=mimetype, max_age=STATIC_MAX_AGE_SECONDS)


def init_docs(app: Flask, public_prefixes: tuple[str, ...]) -> None:
    """Serve the gateway's own document (`/openapi.json`), the merged one and the docs page.

    `public_prefixes` are the /api paths the gateway serves without a token.
    """
    init_openapi(
        app,
        public_prefixes=public_prefixes,
        prefixes=OWN_PREFIXES,
        # The services document what they answer; the docs page's files are no API.
        skip_blueprints=("proxy", "docs_static"),
    )
    app.extensions[_PUBLIC_PREFIXES] = public_prefixes
    app.extensions[_CACHE] = DocumentCache()
    app.register_blueprint(docs_api)
    app.register_blueprint(docs_static)
