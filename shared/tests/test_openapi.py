"""Each service's own OpenAPI document: valid, and listing every route of its URL map."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from marshmallow import RAISE, Schema, fields
from openapi_spec_validator import validate

from shared.openapi import build_spec, documented, documented_rules, openapi_path, rule_methods
from shared.pagination import page_answer
from shared.web import created, expected_version, load_body, no_content, parse_args

SERVICES = ("contacts", "sales", "support", "marketing", "notifications")


def service_app(name: str, tmp_path: Path) -> Flask:
    module = importlib.import_module(f"services.{name}.app")
    app = module.create_app({"database_url": f"sqlite:///{tmp_path / f'{name}.db'}"})
    app.config["TESTING"] = True
    return app


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Every service's app and the document its `GET /openapi.json` answers (no token)."""
    tmp_path = tmp_path_factory.mktemp("openapi")
    apps = {name: service_app(name, tmp_path) for name in SERVICES}
    answers = {name: app.test_client().get("/openapi.json") for name, app in apps.items()}
    yield {name: (apps[name], answers[name]) for name in SERVICES}
    for app in apps.values():
        app.extensions["crm.db"].dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_serves_a_valid_document_without_a_token(
    documents: dict[str, Any], service: str
) -> None:
    _, response = documents[service]
    assert response.status_code == 200
    document = response.get_json()
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == f"CRM {service} API"


@pytest.mark.parametrize("service", SERVICES)
def test_the_document_lists_every_api_route_of_the_url_map(
    documents: dict[str, Any], service: str
) -> None:
    """A route added without showing up in the document fails here."""
    app, response = documents[service]
    paths = response.get_json()["paths"]
    rules = [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1/")]
    assert rules
    missing = []
    for rule in rules:
        path, _ = openapi_path(rule.rule)
        for method in rule_methods(rule):
            if method.lower() not in paths.get(path, {}):
                missing.append(f"{method} {path}")
    assert missing == []


def test_the_tracking_paths_are_documented_and_public(documents: dict[str, Any]) -> None:
    paths = documents["notifications"][1].get_json()["paths"]
    pixel = paths["/t/o/{token}.gif"]["get"]
    assert pixel["security"] == []
    assert "image/gif" in pixel["responses"]["200"]["content"]
    assert "302" in paths["/t/c/{token}"]["get"]["responses"]


def test_create_and_update_bodies_come_from_the_schemas(documents: dict[str, Any]) -> None:
    document = documents["contacts"][1].get_json()
    contacts = document["paths"]["/api/v1/contacts"]
    create_body = contacts["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create_body == {"$ref": "#/components/schemas/ContactIn"}
    update = document["paths"]["/api/v1/contacts/{contact_id}"]["patch"]
    update_body = update["requestBody"]["content"]["application/json"]["schema"]
    assert update_body == {"$ref": "#/components/schemas/ContactInPartial"}
    schemas = document["components"]["schemas"]
    assert "email" in schemas["ContactIn"]["properties"]
    assert schemas["ContactIn"]["additionalProperties"] is False  # unknown fields: 422
    assert "required" not in schemas["ContactInPartial"]


def test_lists_errors_and_security_follow_the_conventions(documents: dict[str, Any]) -> None:
    document = documents["sales"][1].get_json()
    deal = document["paths"]["/api/v1/deals/{deal_id}"]
    assert deal["parameters"][0]["schema"] == {"type": "string", "format": "uuid"}
    assert deal["get"]["responses"]["404"] == {"$ref": "#/components/responses/NotFound"}
    listing = document["paths"]["/api/v1/leads"]["get"]["responses"]["200"]
    envelope = listing["content"]["application/json"]["schema"]
    assert envelope == {"$ref": "#/components/schemas/ListEnvelope"}
    problem = document["components"]["responses"]["UnprocessableEntity"]["content"]
    assert problem["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
    assert set(document["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyAuth"}
    assert document["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}]
    assert "security" not in deal["get"]  # the default: a token or a key
    assert document["paths"]["/api/v1/forms/leads"]["post"]["security"] == []


class ThingSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True)


class ThingArgsSchema(Schema):
    colour = fields.String()


thing_in = ThingSchema()


def _thing_changes() -> Any:
    return load_body(thing_in, partial=True)


def small_app() -> Flask:
    """Routes written the way the services write them, to read the document off."""
    app = Flask(__name__)

    @app.get("/api/v1/things")
    def list_things() -> Any:
        """Things, paged.

        Sorted by name.
        """
        parse_args(ThingArgsSchema())
        return page_answer([], None)

    @app.post("/api/v1/things")
    def create_thing() -> Any:
        return created(load_body(ThingSchema()), "/api/v1/things/1")

    @app.route("/api/v1/things/<int:thing_id>", methods=["PATCH", "DELETE"])
    def change_thing(thing_id: int) -> Any:
        expected_version()
        return _thing_changes() or no_content()

    @app.post("/api/v1/things/<uuid:thing_id>/<any(paint, polish):action>")
    @documented(summary="Work on a thing", responses={"202": {"description": "Accepted"}})
    def work(thing_id: Any, action: str) -> Any:
        return {}

    @app.get("/elsewhere")
    def elsewhere() -> Any:
        return {}

    return app


def test_a_document_is_read_off_the_routes_source() -> None:
    app = small_app()
    document = build_spec(app, title="things")
    validate(document)
    assert sorted(document["paths"]) == [
        "/api/v1/things",
        "/api/v1/things/{thing_id}",
        "/api/v1/things/{thing_id}/{action}",
    ]
    listing = document["paths"]["/api/v1/things"]["get"]
    assert (listing["summary"], listing["description"]) == ("Things, paged.", "Sorted by name.")
    assert [p["name"] for p in listing["parameters"]] == ["colour"]
    create = document["paths"]["/api/v1/things"]["post"]
    assert create["summary"] == "Create thing"
    assert create["requestBody"]["required"] is True
    assert set(create["responses"]) >= {"201", "400", "401", "403", "413", "422", "429"}
    thing = document["paths"]["/api/v1/things/{thing_id}"]
    assert thing["parameters"][0]["schema"] == {"type": "integer"}
    patch_body = thing["patch"]["requestBody"]["content"]["application/json"]["schema"]
    assert patch_body == {"$ref": "#/components/schemas/ThingPartial"}  # found in a helper
    assert [p["name"] for p in thing["patch"]["parameters"]] == ["If-Match"]
    assert "204" in thing["delete"]["responses"]
    work = document["paths"]["/api/v1/things/{thing_id}/{action}"]
    assert work["parameters"][1]["schema"]["enum"] == ["paint", "polish"]
    assert work["post"]["summary"] == "Work on a thing"
    assert "202" in work["post"]["responses"] and "422" in work["post"]["responses"]
    assert work["post"]["requestBody"]["required"] is False  # no schema known: generic


def test_public_prefixes_and_skipped_blueprints() -> None:
    app = small_app()
    document = build_spec(app, title="things", public_prefixes=("/api/v1/things",))
    assert document["paths"]["/api/v1/things"]["get"]["security"] == []
    assert [rule.rule for rule in documented_rules(app, ("/elsewhere",))] == ["/elsewhere"]
