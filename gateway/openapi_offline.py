"""The public OpenAPI document built in this process (`crm openapi`), and checks on it.

No server, broker or database file: every app is built in memory (`sqlite://`) and asked
for its own document through its test client, then merged as the running gateway merges
what it fetches, so both give the same document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask

from gateway.app import create_app
from gateway.docs_api import merge_with_own
from gateway.proxy import ROUTES
from shared.openapi import SPEC_PATH

IN_MEMORY = {"database_url": "sqlite://"}
OPERATIONS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def service_document(factory: Callable[[dict[str, Any]], Flask]) -> dict[str, Any]:
    """A service's own document, as its `GET /openapi.json` answers it."""
    app = factory(dict(IN_MEMORY))
    try:
        response = app.test_client().get(SPEC_PATH)
        if response.status_code != 200:  # a broken document must not pass as a missing one
            raise RuntimeError(f"{SPEC_PATH} answered {response.status_code}")
        return response.get_json()
    finally:
        app.extensions["crm.db"].dispose()


def offline_document(
    service_apps: Mapping[str, Callable[[dict[str, Any]], Flask]],
) -> dict[str, Any]:
    """The gateway's merged document from the services' app factories (name -> create_app).

    A service the gateway forwards to but `service_apps` lacks is named in `x-unavailable`.
    """
    forwarded = set(ROUTES.values())
    documents = {
        name: service_document(service_apps[name]) for name in forwarded & set(service_apps)
    }
    gateway = create_app(dict(IN_MEMORY))
    try:
        with gateway.app_context():
            return merge_with_own(documents, sorted(forwarded - set(documents)))
    finally:
        _close(gateway)


def _close(gateway: Flask) -> None:
    """Let go of what create_app opened: its HTTP session, threads and database."""
    gateway.extensions["gateway.http"].close()
    gateway.extensions["gateway.fanout_pool"].shutdown(wait=False, cancel_futures=True)
    gateway.extensions["crm.db"].dispose()
    limiter = gateway.extensions.get("gateway.rate_limiter")
    if limiter is not None:
        limiter.dispose()


def untyped_operations(document: Mapping[str, Any]) -> list[str]:
    """`METHOD /path` of each operation whose 2xx JSON answer says no fields.

    Untyped: a bare `{"type": "object"}` (no properties, `$ref` or composition), an array
    of those, or a list page whose `items` are those; `$ref`s are followed.
    """
    schemas = document.get("components", {}).get("schemas", {})
    untyped = []
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in OPERATIONS and _answers_untyped(operation, schemas):
                untyped.append(f"{method.upper()} {path}")
    return untyped


def _answers_untyped(operation: Mapping[str, Any], schemas: Mapping[str, Any]) -> bool:
    for status, response in operation.get("responses", {}).items():
        if not str(status).startswith("2"):
            continue
        for media, content in response.get("content", {}).items():
            if "json" in media and "schema" in content and _untyped(content["schema"], schemas):
                return True
    return False


def _resolved(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = set()
    while "$ref" in schema and schema["$ref"] not in seen:
        seen.add(schema["$ref"])
        schema = schemas.get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema


def _bare_object(schema: Mapping[str, Any]) -> bool:
    typed_by = ("properties", "$ref", "allOf", "oneOf", "anyOf", "additionalProperties")
    return schema.get("type") == "object" and not any(key in schema for key in typed_by)


def _untyped(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> bool:
    schema = _resolved(schema, schemas)
    if _bare_object(schema):
        return True
    if schema.get("type") == "array":
        return _bare_object(_resolved(schema.get("items", {}), schemas))
    page_items = _resolved(schema.get("properties", {}).get("items", {}), schemas)
    return page_items.get("type") == "array" and _untyped(page_items, schemas)
