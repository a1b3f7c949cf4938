"""The public OpenAPI document (`/api/v1/openapi.json`); the docs page: test_docs_page.py.

The services are the real ones: each service's create_app on its own werkzeug server in
a thread, so the gateway fetches their documents over HTTP as it does in production.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from openapi_spec_validator import validate
from werkzeug.serving import make_server

from gateway.app import create_app
from gateway.docs_api import CACHE_SECONDS, INCOMPLETE_CACHE_SECONDS, DocumentCache
from gateway.openapi_merge import merge_documents, owner_of
from gateway.openapi_offline import offline_document
from gateway.proxy import ROUTES
from gateway.tests.conftest import close_app, gateway_config
from gateway.tests.fake_services import SERVICES, closed_port
from shared.cli import service_apps
from shared.openapi import app_document, documented_rules, openapi_path, rule_methods


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Flask, str]]]:
    """Every real service app on a local port: name -> (app, base URL)."""
    tmp_path = tmp_path_factory.mktemp("services")
    running = {}
    servers = []
    for name in SERVICES:
        module = importlib.import_module(f"services.{name}.app")
        app = module.create_app({"database_url": f"sqlite:///{tmp_path / f'{name}.db'}"})
        app_document(app)  # built before serving: a cold build on a loaded machine overran
        # the gateway's 2 s, and these tests are about the merge
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        running[name] = (app, f"http://127.0.0.1:{server.server_port}")
    yield running
    for server in servers:
        server.shutdown()
        server.server_close()
    for app, _ in running.values():
        app.extensions["crm.db"].dispose()


def gateway_with(tmp_path: Path, service_urls: dict[str, str]) -> Flask:
    database_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    return create_app(gateway_config(database_url, service_urls=service_urls))


@pytest.fixture
def gateway(tmp_path: Path, services: dict[str, tuple[Flask, str]]) -> Iterator[Flask]:
    app = gateway_with(tmp_path, {name: url for name, (_, url) in services.items()})
    yield app
    close_app(app)


def test_the_merged_document_validates_and_needs_no_token(gateway: Flask) -> None:
    response = gateway.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    validate(document)
    assert document["x-unavailable"] == []
    assert document["info"]["title"] == "CRM API"


def test_every_forwarded_route_of_every_service_is_in_the_document(
    gateway: Flask, services: dict[str, tuple[Flask, str]]
) -> None:
    paths = gateway.test_client().get("/api/v1/openapi.json").get_json()["paths"]
    missing = []
    for name, (app, _) in services.items():
        for rule in documented_rules(app):
            path, _ = openapi_path(rule.rule)
            if owner_of(path, ROUTES) != name:
                continue
            missing += [f"{m} {path}" for m in rule_methods(rule) if m.lower() not in paths[path]]
    assert missing == []
    unlisted = [prefix for prefix in ROUTES if owner_of_any(prefix, paths) is None]
    assert unlisted == []
    strays = [path for path in paths if owner_of(path, ROUTES) is None and not own(gateway, path)]
    assert strays == []  # nothing the gateway would not forward or answer itself


def owner_of_any(prefix: str, paths: dict[str, Any]) -> str | None:
    return next((path for path in paths if owner_of(path, {prefix: "x"})), None)


def own(gateway: Flask, path: str) -> bool:
    return any(openapi_path(rule.rule)[0] == path for rule in gateway.url_map.iter_rules())


def test_the_gateways_own_routes_are_in_the_document(gateway: Flask) -> None:
    paths = gateway.test_client().get("/api/v1/openapi.json").get_json()["paths"]
    own_rules = documented_rules(gateway, ("/api/",), skip_blueprints=("proxy",))
    assert own_rules
    for rule in own_rules:
        path, _ = openapi_path(rule.rule)
        assert {m.lower() for m in rule_methods(rule)} <= set(paths[path]), path
    assert "/docs" in paths and "/health" in paths
    assert "/ready" not in paths and "/metrics" not in paths  # internal listener only


def test_security_is_the_gateways(gateway: Flask) -> None:
    document = gateway.test_client().get("/api/v1/openapi.json").get_json()
    paths = document["paths"]
    assert document["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}]
    assert paths["/api/v1/auth/token"]["post"]["security"] == []
    assert paths["/api/v1/openapi.json"]["get"]["security"] == []
    assert paths["/t/o/{token}.gif"]["get"]["security"] == []
    assert paths["/api/v1/unsubscribe/{token}"]["get"]["security"] == []
    assert "security" not in paths["/api/v1/contacts"]["post"]
    assert "security" not in paths["/api/v1/users"]["get"]


def test_the_offline_document_is_the_one_the_running_gateway_serves(gateway: Flask) -> None:
    served = gateway.test_client().get("/api/v1/openapi.json").get_json()
    built = offline_document(service_apps())
    assert json.dumps(built, sort_keys=True) == json.dumps(served, sort_keys=True)


def test_a_stopped_service_is_named_and_the_rest_still_validates(
    tmp_path: Path, services: dict[str, tuple[Flask, str]]
) -> None:
    urls = {name: url for name, (_, url) in services.items()}
    urls["sales"] = f"http://127.0.0.1:{closed_port()}"
    app = gateway_with(tmp_path, urls)
    try:
        document = app.test_client().get("/api/v1/openapi.json").get_json()
    finally:
        close_app(app)
    validate(document)
    assert document["x-unavailable"] == ["sales"]
    assert "/api/v1/deals" not in document["paths"]
    assert "/api/v1/contacts" in document["paths"]
    assert "/api/v1/tickets" in document["paths"]


def test_the_document_is_kept_for_a_minute_and_an_incomplete_one_briefly() -> None:
    now = [0.0]
    built: list[int] = []

    def build(unavailable: list[str]) -> Any:
        def make() -> dict[str, Any]:
            built.append(1)
            return {"x-unavailable": unavailable}

        return make

    cache = DocumentCache(clock=lambda: now[0])
    cache.get(build([]))
    now[0] = CACHE_SECONDS - 1
    cache.get(build([]))
    assert len(built) == 1
    now[0] = CACHE_SECONDS
    cache.get(build(["sales"]))
    now[0] += INCOMPLETE_CACHE_SECONDS
    cache.get(build([]))
    assert len(built) == 3


def test_components_that_clash_are_renamed_with_their_refs() -> None:
    def document(service: str, thing: dict[str, Any]) -> dict[str, Any]:
        body = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/T"}}}}
        operation = {"operationId": "make", "requestBody": body, "responses": {}}
        return {
            "paths": {f"/api/v1/{service}": {"post": operation}},
            "components": {"schemas": {"T": thing, "Same": {"type": "string"}}},
        }

    own = {"openapi": "3.1.0", "info": {}, "paths": {}, "components": {}}
    merged = merge_documents(
        own,
        {
            "a": document("a", {"type": "object"}),
            "b": document("b", {"type": "array"}),
        },
        ["c"],
        routes={"/api/v1/a": "a", "/api/v1/b": "b"},
        public_prefixes=(),
    )
    schemas = merged["components"]["schemas"]
    assert schemas == {
        "T": {"type": "object"},
        "b.T": {"type": "array"},
        "Same": {"type": "string"},
    }
    b_post = merged["paths"]["/api/v1/b"]["post"]
    assert b_post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/b.T")
    assert b_post["operationId"] == "b_make"
    assert merged["x-unavailable"] == ["c"]
