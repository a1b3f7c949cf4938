"""Owner scope: callers of some roles see and change only the records they own.

A user with the `sales` role works their own leads, deals and tasks: lists, searches and
reads hold only rows whose `owner_id` is theirs (someone else's record answers 404, as if it
did not exist), updates and deletes reach only theirs, and they may not give a record to
someone else (`owner_id` of another user in a write is a 403). An admin grants a user team
visibility (the access token's `team` claim): that user then sees and works the team's.

Reads: one SQLAlchemy `do_orm_execute` hook adds the criterion to every ORM statement of
the request (SQLAlchemy's documented way to add global WHERE criteria), so no route can
forget it. Writes: the domain functions that create, change, assign or convert a record
take the caller and call `ensure_owner_allowed` / `ensure_in_scope` on the input they
apply, never on a second parse of the request. Event handlers (the worker) run outside
requests, pass no caller and are never scoped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask import Flask, g, has_request_context, request
from sqlalchemy.orm import ORMExecuteState, with_loader_criteria

from shared.auth import Principal, forbidden
from shared.db import Database
from shared.web import not_found

SCOPED_ROLES = ("sales",)


def owner_of_scope(principal: Principal | None) -> str | None:
    """The owner id this caller is limited to, or None when they see the team's records."""
    if principal is None or principal.role not in SCOPED_ROLES or principal.team:
        return None
    return principal.subject


def ensure_owner_allowed(principal: Principal | None, data: Mapping[str, Any]) -> None:
    """403 when a caller limited to their own records names another owner (or none) in
    `data`, the validated input a create or an update applies."""
    owner = owner_of_scope(principal)
    if owner is None or "owner_id" not in data:
        return
    named = data["owner_id"]
    if named is None or str(named) != owner:
        raise forbidden("Your role may give records only to yourself")


def ensure_in_scope(principal: Principal | None, record: Any, what: str) -> None:
    """404 when a caller limited to their own records reaches someone else's: as if absent."""
    owner = owner_of_scope(principal)
    if owner is not None and record.owner_id != owner:
        raise not_found(what, record.id)


def scope_to_owner(
    app: Flask, db: Database, models: Iterable[Any], prefixes: tuple[str, ...]
) -> None:
    """Limit scoped callers to their own rows of `models` on paths under `prefixes`."""
    models = tuple(models)

    def decide() -> None:
        g.owner_scope = None
        if not request.path.startswith(prefixes):
            return
        g.owner_scope = owner_of_scope(g.get("principal"))

    def add_criteria(state: ORMExecuteState) -> None:
        if not has_request_context() or g.get("owner_scope") is None:
            return
        if state.is_select and (state.is_column_load or state.is_relationship_load):
            return  # the parent query was criteria'd already
        if not (state.is_select or state.is_update or state.is_delete):
            return
        owner = g.owner_scope
        state.statement = state.statement.options(
            *(
                with_loader_criteria(model, model.owner_id == owner, include_aliases=True)
                for model in models
            )
        )

    app.before_request(decide)
    db.listen("do_orm_execute", add_criteria)
