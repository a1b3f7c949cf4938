"""Owner scope: callers of some roles see and change only the records they own.

A user with the `sales` role works their own leads, deals and tasks: lists, searches and
reads hold only rows whose `owner_id` is theirs (someone else's record answers 404, as if it
did not exist), updates and deletes reach only theirs, and they may not give a record to
someone else (`owner_id` of another user in a write is a 403). An admin grants a user team
visibility (the access token's `team` claim): that user then sees and works the team's.

One SQLAlchemy `do_orm_execute` hook adds the criterion to every ORM statement of the
request (SQLAlchemy's documented way to add global WHERE criteria), so no route can forget
it. Event handlers (the worker) run outside requests and are never scoped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import Flask, g, has_request_context, request
from sqlalchemy.orm import ORMExecuteState, with_loader_criteria

from shared.auth import READ_METHODS, Principal, forbidden
from shared.db import Database

SCOPED_ROLES = ("sales",)


def owner_of_scope(principal: Principal | None) -> str | None:
    """The owner id this caller is limited to, or None when they see the team's records."""
    if principal is None or principal.role not in SCOPED_ROLES or principal.team:
        return None
    return principal.subject


def _owners_named(body: Any) -> list[Any]:
    """The `owner_id` values a JSON write names anywhere: one record, a batch's inputs, or a
    record described inside another (a lead conversion's `deal`)."""
    found, pending = [], [body]
    while pending:  # a loop, not recursion: the body's depth is the client's choice
        value = pending.pop()
        if isinstance(value, dict):
            if "owner_id" in value:
                found.append(value["owner_id"])
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return found


def scope_to_owner(
    app: Flask, db: Database, models: Iterable[Any], prefixes: tuple[str, ...]
) -> None:
    """Limit scoped callers to their own rows of `models` on paths under `prefixes`."""
    models = tuple(models)

    def decide() -> None:
        g.owner_scope = None
        if not request.path.startswith(prefixes):
            return
        owner = owner_of_scope(g.get("principal"))
        if owner is None:
            return
        if request.method not in READ_METHODS:
            named = _owners_named(request.get_json(silent=True))
            if any(value != owner for value in named):
                raise forbidden("Your role may give records only to yourself")
        g.owner_scope = owner

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
