"""shared.web's conventions every service has: paths refused before routing, ops endpoints."""

from __future__ import annotations

import pytest
from flask import Flask, jsonify

from shared.config import load_settings
from shared.web import init_app, load_body, path_problem

SECRET = "shared-web-tests-" + "s" * 40


def service_app(**extra: object) -> Flask:
    """A service with one route that counts its calls, and the shared conventions."""
    settings = load_settings("probe").with_overrides(jwt_secret=SECRET)
    settings.extra.update(extra)
    app = Flask("probe")
    app.config["TESTING"] = True
    init_app(app, settings, None, dead_letters=False)
    app.config["calls"] = 0

    @app.post("/api/v1/webhooks")
    def webhooks():
        app.config["calls"] += 1
        return jsonify({}), 201

    return app


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/x/../webhooks",
        "/api/v1/x/%2e%2e/webhooks",
        "/api/v1/x/%2E%2E%2fwebhooks",
        "/api/v1/./webhooks",
        "/api/v1//webhooks",
        "/api/v1/x/..%5cwebhooks",
        "/api/v1/%252e%252e/webhooks",
        "/metrics/.",
    ],
)
def test_a_service_refuses_an_unnormalised_path_before_any_route(path):
    app = service_app()

    answer = app.test_client().post(path, json={})

    assert answer.status_code == 400 and answer.mimetype == "application/problem+json"
    assert "URL path" in answer.get_json()["detail"]
    assert app.config["calls"] == 0


def test_a_normal_path_still_reaches_its_route():
    app = service_app()
    client = app.test_client()

    assert client.post("/api/v1/webhooks", json={}).status_code == 201
    assert client.post("/api/v1/webhooks/", json={}).status_code == 201
    assert app.config["calls"] == 2


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ("/", None),
        ("/a/b/", None),
        ("/a/b.c/.../d e/50%", None),
        ("//a", "an empty segment (//)"),
        ("/a//", "an empty segment (//)"),
        ("/a/./b", "a '.' segment"),
        ("/a/..", "a '..' segment"),
        ("/a\\b", "a backslash"),
        ("/a/%2e", "percent-encoding left after decoding (encoded twice)"),
        ("a/b", "no leading slash"),
    ],
)
def test_what_a_normal_path_is(path, refused):
    assert path_problem(path) == refused


def body_app() -> Flask:
    """A service with one route that reads a JSON object with `load_body`."""
    from marshmallow import Schema, fields

    class NameSchema(Schema):
        name = fields.String(required=True)

    app = service_app()

    @app.post("/api/v1/names")
    def names():
        return jsonify(load_body(NameSchema())), 201

    return app


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
    ],
)
def test_a_body_not_declared_json_in_utf8_is_refused_415(content_type):
    answer = (
        body_app()
        .test_client()
        .post("/api/v1/names", data='{"name": "x"}', content_type=content_type)
    )

    assert answer.status_code == 415 and answer.mimetype == "application/problem+json"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON;CHARSET=UTF-8",
        "application/problem+json",
    ],
)
def test_a_body_declared_json_is_read(content_type):
    answer = (
        body_app()
        .test_client()
        .post("/api/v1/names", data='{"name": "x"}', content_type=content_type)
    )

    assert answer.status_code == 201 and answer.get_json() == {"name": "x"}


def test_an_empty_or_malformed_json_body_is_still_a_400():
    client = body_app().test_client()

    assert client.post("/api/v1/names").status_code == 400
    assert (
        client.post("/api/v1/names", data="{x", content_type="application/json").status_code == 400
    )
