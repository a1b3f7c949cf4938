"""A fixed corpus of nasty inputs, and bodies built from an OpenAPI document to carry them.

Nothing here is random: the same requests every run, so a defect found once stays found.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests

# Text that must be refused (4xx) or stored and answered back exactly as sent.
NASTY_STRINGS = {
    "nul": "before\x00after",
    "lone surrogate": "half \ud800 a pair",
    "formula": "=cmd|' /C calc'!A0",
    "formula plus": "+1+cmd|' /C calc'!A0",
    "formula minus": "-2+3+cmd|' /C calc'!A0",
    "formula at": "@SUM(1+9)*cmd|' /C calc'!A0",
    "header injection": "a@example.com\r\nBcc: x@evil.example",
    "sql quote": "' OR 1=1 --",
    "sql drop": '"; DROP TABLE contacts; --',
}
FORMULAS = ("formula", "formula plus", "formula minus", "formula at")
HUGE = "x" * 1_000_000
DEPTH = 10_000
# Bodies that are not JSON a service can take: each must be a 400/413/415/422 problem.
MALFORMED_BODIES = {
    "invalid utf-8": b'{"name": "\xff\xfe\xfa bad bytes"}',
    "deep arrays": b"[" * DEPTH + b"]" * DEPTH,
    "deep objects": b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
    "deep value": b'{"name": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
}
WRITE_METHODS = ("post", "put", "patch")
_unique = itertools.count()


@dataclass(frozen=True)
class WriteOperation:
    """A write of the public API and the JSON body schema it documents."""

    method: str
    path: str
    body: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"


class Document:
    """An OpenAPI document, read for its write operations and their body schemas."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def resolve(self, schema: Any) -> Any:
        while isinstance(schema, dict) and "$ref" in schema:
            node: Any = self.document
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def writes(self) -> list[WriteOperation]:
        """Every POST, PUT and PATCH with a JSON body, in the document's order."""
        found = []
        for path, item in self.document["paths"].items():
            for method in WRITE_METHODS:
                content = item.get(method, {}).get("requestBody", {}).get("content", {})
                if "application/json" in content:
                    schema = self.resolve(content["application/json"].get("schema", {}))
                    found.append(WriteOperation(method, path, schema))
        return found

    def properties(self, schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {name: self.resolve(value) for name, value in schema.get("properties", {}).items()}

    def text_fields(self, operation: WriteOperation) -> list[str]:
        """The top-level body fields that take a string."""
        return [
            name
            for name, schema in self.properties(operation.body).items()
            if "string" in types_of(schema)
        ]

    def sample_body(self, operation: WriteOperation) -> dict[str, Any]:
        """A plausible body: every required field, plus every text field, with sane values."""
        required = set(operation.body.get("required", []))
        return {
            name: sample_value(name, schema, self)
            for name, schema in self.properties(operation.body).items()
            if name in required or (types_of(schema) == ["string"] and "format" not in schema)
        }


def types_of(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def sample_value(name: str, schema: dict[str, Any], document: Document) -> Any:
    """A value the schema takes, chosen the same way every run (emails unique per run)."""
    if "enum" in schema:
        return next((value for value in schema["enum"] if value is not None), None)
    kinds = [kind for kind in types_of(schema) if kind != "null"] or ["string"]
    kind = kinds[0]
    if kind == "string":
        return sample_string(name, schema)
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return {
            key: sample_value(key, document.resolve(value), document)
            for key, value in schema.get("properties", {}).items()
            if key in schema.get("required", [])
        }
    return None


def sample_string(name: str, schema: dict[str, Any]) -> str:
    fmt = schema.get("format")
    if fmt == "email" or name.endswith("email"):
        return f"nasty{next(_unique)}@example.com"
    if fmt == "uuid" or name.endswith("_id") or name == "id":
        return str(uuid.uuid4())
    if fmt == "date-time" or name.endswith("_at"):
        return "2030-01-02T03:04:05Z"
    if fmt == "date":
        return "2030-01-02"
    if fmt in ("uri", "url") or name == "url":
        return "https://hooks.example.com/crm"
    if name in ("currency",):
        return "EUR"
    if name == "amount":
        return "10.00"
    return f"Nasty {name} {next(_unique)}"[: schema.get("maxLength", 40)]


class PathFiller:
    """Real ids for path parameters: made by the collection's own create, else listed."""

    def __init__(self, session: requests.Session, base: str, document: Document) -> None:
        self.session, self.base, self.document = session, base, document
        self.creates = {op.path: op for op in document.writes() if op.method == "post"}
        self.known: dict[str, str] = {}

    def fill(self, template: str) -> str:
        """`/contacts/{contact_id}/notes` with a real contact's id (a random one at worst)."""
        filled = ""
        for part in template.strip("/").split("/"):
            if part.startswith("{") and part.endswith("}"):
                part = self.id_in(filled)
            filled += f"/{part}"
        return filled

    def id_in(self, collection: str) -> str:
        if collection not in self.known:
            self.known[collection] = self._created(collection) or self._listed(collection)
        return self.known[collection]

    def _created(self, collection: str) -> str | None:
        template = next((p for p in self.creates if self.fill_like(p) == collection), None)
        if template is None:
            return None
        body = self.document.sample_body(self.creates[template])
        answer = self.session.post(self.base + collection, json=body, timeout=60)
        return _id_of(answer) if answer.status_code in (200, 201) else None

    def fill_like(self, template: str) -> str:
        """The template with the ids already known put in (no new records made)."""
        filled = ""
        for part in template.strip("/").split("/"):
            if part.startswith("{") and part.endswith("}"):
                part = self.known.get(filled, "?")
            filled += f"/{part}"
        return filled

    def _listed(self, collection: str) -> str:
        answer = self.session.get(self.base + collection, timeout=60)
        page = json_of(answer) if answer.status_code == 200 else None
        for item in page.get("items", []) if isinstance(page, dict) else []:
            if isinstance(item, dict) and "id" in item:
                return str(item["id"])
        return str(uuid.uuid4())


def json_of(answer: requests.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def _id_of(answer: requests.Response) -> str | None:
    body = json_of(answer)
    return str(body["id"]) if isinstance(body, dict) and "id" in body else None


def json_bytes(body: Any) -> bytes:
    """The body as JSON text; a lone surrogate goes out as its `\\ud800` escape."""
    return json.dumps(body, ensure_ascii=True).encode()


def cases(document: Document) -> Iterator[tuple[WriteOperation, str, str]]:
    """(operation, field, corpus name) for each text field of each write and each string."""
    for operation in document.writes():
        for field in document.text_fields(operation):
            for name in NASTY_STRINGS:
                yield operation, field, name
