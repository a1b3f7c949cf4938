"""`Idempotency-Key` on POST: the same key again returns the first answer, not a second record."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Response, current_app, g, request
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from shared.events import utcnow

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200
RETENTION = timedelta(hours=24)


def define_idempotency_table(metadata: MetaData) -> Table:
    if "idempotency_keys" in metadata.tables:
        return metadata.tables["idempotency_keys"]
    return Table(
        "idempotency_keys",
        metadata,
        Column("scope", String(128), primary_key=True),
        Column("key", String(MAX_KEY_LENGTH), primary_key=True),
        Column("fingerprint", String(64), nullable=False),
        Column("status", Integer, nullable=True),  # NULL while the first request runs
        Column("body", Text, nullable=True),
        Column("location", String(512), nullable=True),
        Column("resource_id", String(64), nullable=True, index=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )


def _problem(status: int, title: str, detail: str) -> Response:
    from shared.web import problem

    return problem(status, title, detail)


def _fingerprint() -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(request.full_path.encode())
    digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def _scope() -> str:
    principal = g.get("principal")
    return principal.subject if principal is not None else "anonymous"


def _replay(row: Any) -> Response:
    response = Response(row.body, status=row.status, mimetype="application/json")
    if row.location:
        response.headers["Location"] = row.location
    response.headers["Idempotent-Replayed"] = "true"
    return response


def idempotent(view: Callable[..., Any]) -> Callable[..., Any]:
    """Make a POST view answer a repeated Idempotency-Key with its first answer."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not key.strip() or len(key) > MAX_KEY_LENGTH:
            return _problem(
                400, "Bad Request", f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters"
            )
        db = current_app.extensions["crm.db"]
        table = db.idempotency
        scope, fingerprint = _scope(), _fingerprint()
        with db.session() as session:
            row = session.execute(
                select(table).where(table.c.scope == scope, table.c.key == key)
            ).first()
        if row is not None:
            if row.fingerprint != fingerprint:
                return _problem(
                    422, "Unprocessable Entity", f"{HEADER} was used for another request"
                )
            if row.status is None:
                return _problem(409, "Conflict", f"A request with this {HEADER} is in progress")
            return _replay(row)
        try:
            with db.session() as session:
                session.execute(
                    table.insert().values(
                        scope=scope, key=key, fingerprint=fingerprint, created_at=utcnow()
                    )
                )
        except IntegrityError:
            return _problem(409, "Conflict", f"A request with this {HEADER} is in progress")
        try:
            response = current_app.make_response(view(*args, **kwargs))
        except BaseException:
            _forget(db, scope, key)  # refused or failed: the key may be used again
            raise
        _remember(db, scope, key, response)
        return response

    return wrapper


def _forget(db: Any, scope: str, key: str) -> None:
    table = db.idempotency
    with db.session() as session:
        session.execute(delete(table).where((table.c.scope == scope) & (table.c.key == key)))


def _remember(db: Any, scope: str, key: str, response: Response) -> None:
    table = db.idempotency
    where = (table.c.scope == scope) & (table.c.key == key)
    with db.session() as session:
        if response.status_code >= 400:
            # A refused request changed nothing: the client may fix it and retry with the key.
            session.execute(delete(table).where(where))
            return
        body = response.get_data(as_text=True)
        resource_id = None
        try:
            parsed = json.loads(body) if body else None
            if isinstance(parsed, dict) and isinstance(parsed.get("id"), str):
                resource_id = parsed["id"]
        except ValueError:
            pass
        session.execute(
            update(table)
            .where(where)
            .values(
                status=response.status_code,
                body=body,
                location=response.headers.get("Location"),
                resource_id=resource_id,
            )
        )


def forget_resource(session: Any, resource_id: str) -> None:
    """Drop remembered answers about a resource (they may hold personal data)."""
    table = session.info["db"].idempotency
    session.execute(delete(table).where(table.c.resource_id == resource_id))


def purge_expired(session: Any) -> int:
    table = session.info["db"].idempotency
    result = session.execute(delete(table).where(table.c.created_at < utcnow() - RETENTION))
    return result.rowcount or 0
