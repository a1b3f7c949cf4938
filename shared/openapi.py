"""OpenAPI 3 documents built from a service's Flask routes and the schemas they load.

A route needs no annotations: its path, methods and path parameters come from the URL
map, its summary from the view's docstring (first line), and its request body, query
parameters and answers from what the view's code calls (see `shared.openapi_source`).
A write whose schema cannot be found still gets a generic JSON body. Where the source
says too little, `@documented(...)` merges an OpenAPI operation fragment over it.

`init_openapi(app)` serves the document at `GET /openapi.json` (outside /api: no token);
the gateway merges the services' documents into the public one.
"""

from __future__ import annotations

import inspect
import re
import uuid
import warnings
from collections.abc import Callable, Iterable
from datetime import date
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify
from marshmallow import Schema
from werkzeug.routing import Rule

from shared.idempotency import acts
from shared.openapi_source import ViewFacts, view_facts

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
SPEC_PATH = "/openapi.json"
DOCUMENTED_PREFIXES = ("/api/", "/t/")
BEARER, API_KEY = "bearerAuth", "apiKeyAuth"
SECURITY = [{BEARER: []}, {API_KEY: []}]
NO_SECURITY: list[dict[str, list[str]]] = []
ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 414, 415, 422, 429)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
PROBLEM_JSON = "application/problem+json"
GENERIC_JSON = {"application/json": {"schema": {"type": "object"}}}
BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_EXTENSION = "crm.openapi"
_OVERRIDES = "__openapi__"
_PLACEHOLDER = re.compile(r"<(?:(?P<converter>\w+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>")
_CONVERTER_SCHEMAS: dict[str, dict[str, Any]] = {
    "uuid": {"type": "string", "format": "uuid"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
}


def documented(**operation: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Merge an OpenAPI operation fragment (summary, responses, ...) over what is inferred."""

    def mark(view: Callable[..., Any]) -> Callable[..., Any]:
        setattr(view, _OVERRIDES, {**getattr(view, _OVERRIDES, {}), **operation})
        return view

    return mark


def schema_name(schema: type[Schema] | Schema) -> str:
    """`ContactInSchema` -> `ContactIn`; a partial instance (for PATCH) -> `ContactInPartial`."""
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__.removesuffix("Schema") or cls.__name__
    partial = not isinstance(schema, type) and getattr(schema, "partial", False)
    return f"{name}Partial" if partial else name


def new_spec(title: str, description: str = "") -> APISpec:
    """An empty document with the shared components: security, problems, the list envelope."""
    spec = APISpec(
        title=title,
        version=API_VERSION,
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin(schema_name_resolver=schema_name)],
        info={"description": description} if description else {},
        security=SECURITY,
    )
    components = spec.components
    components.security_scheme(BEARER, {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    components.security_scheme(API_KEY, {"type": "apiKey", "in": "header", "name": "X-API-Key"})
    components.schema("Problem", PROBLEM_SCHEMA)
    components.schema("ListEnvelope", LIST_ENVELOPE_SCHEMA)
    for status in ERROR_STATUSES:
        components.response(error_response_name(status), _problem_response(status))
    components.parameter("limit", "query", LIMIT_PARAMETER)
    components.parameter("cursor", "query", CURSOR_PARAMETER)
    return spec


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An error (RFC 9457 problem details).",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "object",
            "description": "Messages per invalid field.",
            "additionalProperties": True,
        },
    },
}
LIST_ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One page of a list; pass `next_cursor` as `?cursor=` for the next.",
    "required": ["items", "next_cursor"],
    "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "next_cursor": {"type": ["string", "null"]},
    },
}
LIMIT_PARAMETER = {
    "description": "Page size (default 50).",
    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
}
CURSOR_PARAMETER = {
    "description": "The `next_cursor` of the previous page.",
    "schema": {"type": "string"},
}


def error_response_name(status: int) -> str:
    """The component name of an error response: 404 -> `NotFound`."""
    return HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")


def _problem_response(status: int) -> dict[str, Any]:
    if status == 414:  # answered by gunicorn before the app sees the request: not JSON
        return {"description": "URI Too Long: the request line is over 8190 bytes"}
    response: dict[str, Any] = {
        "description": HTTPStatus(status).phrase,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status == 429:
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
        }
    return response


def openapi_path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    """`/contacts/<uuid:contact_id>` -> (`/contacts/{contact_id}`, its path parameters)."""
    parameters = []
    for match in _PLACEHOLDER.finditer(rule):
        converter = match.group("converter") or "default"
        schema = dict(_CONVERTER_SCHEMAS.get(converter, {"type": "string"}))
        if converter == "any" and match.group("args"):
            schema["enum"] = [v.strip(" '\"") for v in match.group("args").split(",")]
        parameters.append({"in": "path", "name": match.group("name"), "required": True})
        parameters[-1]["schema"] = schema
    return _PLACEHOLDER.sub(lambda m: "{" + m.group("name") + "}", rule), parameters


def documented_rules(
    app: Flask, prefixes: tuple[str, ...] = DOCUMENTED_PREFIXES, skip_blueprints: Iterable[str] = ()
) -> list[Rule]:
    """The app's rules that belong in its document: under `prefixes`, not in skipped blueprints."""
    skipped = tuple(f"{name}." for name in skip_blueprints)
    return sorted(
        (
            rule
            for rule in app.url_map.iter_rules()
            if rule.rule.startswith(prefixes) and not rule.endpoint.startswith(skipped)
        ),
        key=lambda rule: rule.rule,
    )


def rule_methods(rule: Rule) -> list[str]:
    return sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"})


def build_spec(
    app: Flask,
    *,
    title: str,
    public_prefixes: tuple[str, ...] = (),
    prefixes: tuple[str, ...] = DOCUMENTED_PREFIXES,
    skip_blueprints: Iterable[str] = (),
) -> dict[str, Any]:
    """The OpenAPI document of `app`'s routes under `prefixes`, as a dict."""
    spec = new_spec(title)
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    allowing_empty: list[tuple[str, str]] = []
    for rule in documented_rules(app, prefixes, skip_blueprints):
        template, parameters = openapi_path(rule.rule)
        item = paths.setdefault(template, {"parameters": parameters, "operations": {}})
        view = app.view_functions[rule.endpoint]
        facts = view_facts(view)
        public = not rule.rule.startswith("/api/") or rule.rule.startswith(public_prefixes)
        facts.idempotent = not public and acts(rule.rule)  # every POST that creates or acts
        for method in rule_methods(rule):
            if method.lower() not in item["operations"]:
                operation = _operation(rule, method, view, facts, public, bool(parameters))
                operation["operationId"] = _unique(operation["operationId"], operation_ids)
                item["operations"][method.lower()] = operation
                if facts.query_allows_empty:
                    allowing_empty.append((template, method.lower()))
    with warnings.catch_warnings():
        # apispec can show only the first of several regex validators on a field: fine.
        warnings.filterwarnings("ignore", "More than one regex validator", UserWarning)
        for template, item in paths.items():
            operations, parameters = item["operations"], item["parameters"]
            spec.path(path=template, operations=operations, parameters=parameters)
    document = spec.to_dict()
    for template, method in allowing_empty:
        _allow_empty_query_values(document["paths"][template][method])
    return plain_json(document)


def _allow_empty_query_values(operation: dict[str, Any]) -> None:
    """`parse_args(..., drop_empty=True)` takes `?x=` as absent: each query parameter says so."""
    for parameter in operation.get("parameters", []):
        if isinstance(parameter, dict) and parameter.get("in") == "query":
            parameter["allowEmptyValue"] = True


def _unique(operation_id: str, taken: set[str]) -> str:
    """The id, or with a number if another rule of the same view took it already."""
    unique, number = operation_id, 1
    while unique in taken:
        number += 1
        unique = f"{operation_id}_{number}"
    taken.add(unique)
    return unique


def plain_json(value: Any) -> Any:
    """`value` with only JSON types: validators' Decimals become numbers (JSON Schema's
    `maximum` is a number), dates and UUIDs strings, tuples and sets lists."""
    if isinstance(value, dict):
        return {
            str(key): _number(item) if key in BOUNDS else plain_json(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [plain_json(item) for item in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, date | uuid.UUID):
        return value.isoformat() if isinstance(value, date) else str(value)
    return value


def _number(value: Any) -> Any:
    """A bound as a number: a Decimal field's range comes out of apispec as "12.50"."""
    try:
        return plain_json(Decimal(value)) if isinstance(value, str | Decimal) else value
    except ArithmeticError:
        return value


def _operation(
    rule: Rule,
    method: str,
    view: Callable[..., Any],
    facts: ViewFacts,
    public: bool,
    has_path_parameters: bool,
) -> dict[str, Any]:
    summary, description = _docstring(view)
    operation: dict[str, Any] = {
        "operationId": f"{rule.endpoint.replace('.', '_')}_{method.lower()}",
        "summary": summary,
        "tags": [_tag(rule.rule)],
        "parameters": _parameters(method, facts),
        "responses": _responses(method, facts, public, has_path_parameters),
    }
    if description:
        operation["description"] = description
    if public:
        operation["security"] = NO_SECURITY
    if method in BODY_METHODS:
        operation["requestBody"] = _request_body(facts)
    overrides = getattr(inspect.unwrap(view), _OVERRIDES, None) or getattr(view, _OVERRIDES, {})
    responses = {**operation["responses"], **overrides.get("responses", {})}
    return {**operation, **overrides, "responses": responses}


def _docstring(view: Callable[..., Any]) -> tuple[str, str]:
    doc = inspect.getdoc(inspect.unwrap(view)) or ""
    first, _, rest = doc.partition("\n")
    if not first:
        name = inspect.unwrap(view).__name__.replace("_", " ").strip()
        return name[:1].upper() + name[1:], ""
    return first.strip(), rest.strip()


def _tag(path: str) -> str:
    parts = [part for part in path.removeprefix("/api/v1").split("/") if part]
    if path.startswith("/t/"):
        return "tracking"
    return parts[0].removesuffix(".json") if parts else "api"


def _parameters(method: str, facts: ViewFacts) -> list[Any]:
    parameters: list[Any] = []
    if facts.query is not None:
        parameters.append({"in": "query", "schema": facts.query})
    elif facts.calls & {"list_params", "page_answer"} and method == "GET":
        parameters += ["limit", "cursor"]  # apispec names a component parameter by name
    if facts.idempotent and method == "POST":
        parameters.append(_header("Idempotency-Key", "Replays the first answer to a repeated key."))
    if "expected_version" in facts.calls and method != "GET":
        parameters.append(_header("If-Match", 'The version expected, as an ETag: "3".'))
    return parameters


def _header(name: str, description: str) -> dict[str, Any]:
    return {"in": "header", "name": name, "description": description, "schema": {"type": "string"}}


def _request_body(facts: ViewFacts) -> dict[str, Any]:
    if facts.body is None:
        return {"required": False, "content": GENERIC_JSON}
    content = {"application/json": {"schema": facts.body}}
    return {"required": not facts.body_optional, "content": content}


def _responses(
    method: str, facts: ViewFacts, public: bool, has_path_parameters: bool
) -> dict[str, Any]:
    responses = _success_responses(facts)
    errors = {400, 414, 422, 429}
    if not public:
        errors |= {401, 403}
    if has_path_parameters:
        errors.add(404)
    if method in BODY_METHODS:
        errors |= {409, 413}
    if method == "DELETE":
        errors.add(409)
    for status in sorted(errors):
        ref = f"#/components/responses/{error_response_name(status)}"
        responses[str(status)] = {"$ref": ref}
    return responses


def _success_responses(facts: ViewFacts) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if "page_answer" in facts.calls:
        envelope = {"schema": {"$ref": "#/components/schemas/ListEnvelope"}}
        responses["200"] = {"description": "A page", "content": {"application/json": envelope}}
    if facts.calls & {"created", "created_with_etag"}:
        location = {"description": "The new record's URL", "schema": {"type": "string"}}
        responses["201"] = {
            "description": "Created",
            "headers": {"Location": location},
            "content": GENERIC_JSON,
        }
    if "no_content" in facts.calls:
        responses["204"] = {"description": "Done; no content"}
    if facts.calls & {"run_batch", "read_batch"}:
        responses["207"] = {
            "description": "A result per input: some failed",
            "content": GENERIC_JSON,
        }
    if "read_batch" in facts.calls:
        responses["200"] = {"description": "Every record, in order", "content": GENERIC_JSON}
    for status in sorted(facts.statuses):
        responses[str(status)] = {"description": HTTPStatus(status).phrase}
    if not any(status.startswith("2") for status in responses):
        content = {media: {} for media in facts.media_types} or GENERIC_JSON
        responses["200"] = {"description": "OK", "content": content}
    return responses


def init_openapi(
    app: Flask,
    *,
    public_prefixes: tuple[str, ...] = (),
    prefixes: tuple[str, ...] = DOCUMENTED_PREFIXES,
    skip_blueprints: Iterable[str] = (),
) -> None:
    """Serve the app's own document at `GET /openapi.json`, built on first use.

    `public_prefixes` are the /api paths the app serves without a token (as given to
    `shared.auth.protect`); paths outside /api are public anyway. `prefixes` choose the
    paths documented; `skip_blueprints` leaves whole blueprints out.
    """
    options = {
        "title": f"CRM {app.config.get('CRM_SERVICE', app.name)} API",
        "public_prefixes": public_prefixes,
        "prefixes": prefixes,
        "skip_blueprints": tuple(skip_blueprints),
    }
    app.extensions[_EXTENSION] = {"options": options, "document": None}
    blueprint = Blueprint("openapi", __name__)

    @blueprint.get(SPEC_PATH)
    def openapi_document() -> Response:
        """This service's OpenAPI document."""
        return jsonify(app_document(current_app))

    app.register_blueprint(blueprint)


def app_document(app: Flask) -> dict[str, Any]:
    """The app's own document (see init_openapi), built once: routes do not change."""
    state = app.extensions[_EXTENSION]
    if state["document"] is None:  # two requests may both build it: same result
        state["document"] = build_spec(app, **state["options"])
    return state["document"]
