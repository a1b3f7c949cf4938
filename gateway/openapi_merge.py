"""One public OpenAPI document from the gateway's own and the services' documents.

Only what a client can reach goes in: the gateway's own paths, and of each service's
document the paths the gateway forwards to that service (proxy.ROUTES). Security is the
gateway's to say: a path under its public prefixes (or outside /api) needs no token,
every other one a bearer token or an API key. Components that two documents name alike
but define differently are renamed `<service>.<name>` in the service's part, with its
`$ref`s; the services missing are named in `x-unavailable`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from shared.openapi import NO_SECURITY

TITLE = "CRM API"
DESCRIPTION = (
    "The public API of the CRM, through the gateway. Sign in with `POST /api/v1/auth/token`"
    " and send `Authorization: Bearer <token>` (or an `X-API-Key`). Lists take `?limit=`"
    " and `?cursor=` and answer `{items, next_cursor}`; errors are problem+json."
)
UNAVAILABLE = "x-unavailable"
OPERATIONS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def owner_of(path: str, routes: Mapping[str, str]) -> str | None:
    """The service the gateway forwards `path` to: its longest whole-segment prefix's."""
    owners = [
        (len(prefix), service)
        for prefix, service in routes.items()
        if path == prefix or path.startswith(prefix.rstrip("/") + "/")
    ]
    return max(owners)[1] if owners else None


def merge_documents(
    own: Mapping[str, Any],
    services: Mapping[str, Mapping[str, Any]],
    unavailable: list[str],
    *,
    routes: Mapping[str, str],
    public_prefixes: tuple[str, ...],
) -> dict[str, Any]:
    """The gateway's document `own` with each service's forwarded paths and components."""
    merged = copy.deepcopy(dict(own))
    merged["info"] = {**merged.get("info", {}), "title": TITLE, "description": DESCRIPTION}
    components = merged.setdefault("components", {})
    operation_ids = _operation_ids(merged["paths"])
    for service in sorted(services):
        document = _without_clashes(services[service], service, components)
        for path, item in document.get("paths", {}).items():
            if owner_of(path, routes) == service and path not in merged["paths"]:
                merged["paths"][path] = _unique_ids(item, service, operation_ids)
        for kind, named in document.get("components", {}).items():
            components.setdefault(kind, {}).update(named)
    merged["paths"] = {path: merged["paths"][path] for path in sorted(merged["paths"])}
    for path, item in merged["paths"].items():
        _secure(path, item, public_prefixes)
    merged[UNAVAILABLE] = sorted(unavailable)
    return merged


def _operation_ids(paths: Mapping[str, Any]) -> set[str]:
    return {
        operation["operationId"]
        for item in paths.values()
        for method, operation in item.items()
        if method in OPERATIONS and "operationId" in operation
    }


def _unique_ids(item: dict[str, Any], service: str, taken: set[str]) -> dict[str, Any]:
    for method, operation in item.items():
        if method not in OPERATIONS or "operationId" not in operation:
            continue
        if operation["operationId"] in taken:
            operation["operationId"] = f"{service}_{operation['operationId']}"
        taken.add(operation["operationId"])
    return item


def _secure(path: str, item: dict[str, Any], public_prefixes: tuple[str, ...]) -> None:
    """The gateway's rule: public paths say `security: []`, the rest take the default."""
    public = not path.startswith("/api/") or path.startswith(public_prefixes)
    for method, operation in item.items():
        if method not in OPERATIONS:
            continue
        if public:
            operation["security"] = NO_SECURITY
        else:
            operation.pop("security", None)


def _without_clashes(
    document: Mapping[str, Any], service: str, taken: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """A copy of `document` whose components differing from `taken`'s are renamed.

    Renaming one component changes those that refer to it, so this goes on until a
    pass finds no new clash.
    """
    renames: dict[tuple[str, str], str] = {}
    while True:
        renamed = _renamed(document, renames)
        clashes = {
            (kind, name)
            for kind, named in renamed.get("components", {}).items()
            for name, value in named.items()
            if name in taken.get(kind, {}) and taken[kind][name] != value
        }
        if not clashes:
            return renamed
        renames.update({(kind, name): f"{service}.{name}" for kind, name in clashes})


def _renamed(document: Mapping[str, Any], renames: Mapping[tuple[str, str], str]) -> Any:
    refs = {
        f"#/components/{kind}/{name}": f"#/components/{kind}/{new}"
        for (kind, name), new in renames.items()
    }
    copied = _with_refs(document, refs)
    for kind, named in copied.get("components", {}).items():
        copied["components"][kind] = {
            renames.get((kind, name), name): value for name, value in named.items()
        }
    return copied


def _with_refs(value: Any, refs: Mapping[str, str]) -> Any:
    if isinstance(value, Mapping):
        return {
            key: refs.get(item, item) if key == "$ref" else _with_refs(item, refs)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_with_refs(item, refs) for item in value]
    return value
