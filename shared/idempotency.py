"""`Idempotency-Key` on POST: the same key again returns the first answer, not a second record.

One hook (`init_idempotency`, in every app) covers every POST that creates or acts: creates,
batch creates and updates, imports, merges, win/lose/reopen, assign, complete, launch, the
gateway's users and API keys. Not covered: POSTs that only read (search, batch read, a
template preview) and public POSTs without a caller (signed links, the lead form). Answers
are kept per caller for RETENTION; the same key with another method, path, query or body is
a 422, and while the first request runs a 409. A refused request (4xx) or a failed one keeps
nothing: the client may fix it and retry with the same key.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from datetime import timedelta
from typing import Any

from flask import Flask, Response, current_app, g, request
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
SPOOL_BYTES = 1024 * 1024  # a body hashed for its fingerprint is kept in memory up to this
# POSTs that only read, besides shared.auth's READ_ONLY_POST_SUFFIXES (search, batch read).
READS_ONLY = ("/preview",)
_CLAIM = "idempotency_claim"  # (scope, key) on `g` while this request holds its key


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
    """The hash of this request's method, path, query and body; the view still reads the body.

    The body is copied as it is hashed (to a temporary file past 1 MiB: a CSV import may be
    large), and the copy becomes the request's stream.
    """
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(request.full_path.encode())
    raw = request._get_current_object()  # type: ignore[attr-defined]
    cached = getattr(raw, "_cached_data", None)  # read already (get_data): hash that
    if cached is not None:
        digest.update(cached)
        return digest.hexdigest()
    copy = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - the view's
    for chunk in iter(lambda: request.stream.read(64 * 1024), b""):
        digest.update(chunk)
        copy.write(chunk)
    copy.seek(0)
    raw.stream = copy
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


def takes_key(skip_blueprints: tuple[str, ...] = ()) -> bool:
    """Whether this request creates or acts: an authenticated POST that does not only read."""
    if request.method != "POST" or request.endpoint is None or g.get("principal") is None:
        return False  # public POSTs (links, forms) have no caller to keep answers for
    return request.blueprint not in skip_blueprints and acts(request.path)


def acts(path: str) -> bool:
    """Whether a POST to `path` creates or acts (takes a key), rather than only reads."""
    from shared.auth import READ_ONLY_POST_SUFFIXES  # shared.auth imports shared.db, this

    return not path.rstrip("/").endswith((*READ_ONLY_POST_SUFFIXES, *READS_ONLY))


def init_idempotency(app: Flask, *, skip_blueprints: tuple[str, ...] = ()) -> None:
    """Every POST that creates or acts answers a repeated Idempotency-Key with its first answer.

    Call after `shared.auth.protect`: answers are kept per caller. `skip_blueprints`: routes
    that only forward (the gateway's proxy; the service behind it keeps the answer).
    """

    def claim() -> Response | None:
        key = request.headers.get(HEADER)
        if key is None or not takes_key(skip_blueprints):
            return None
        return _claim(key)

    def remember(response: Response) -> Response:
        claimed = g.pop(_CLAIM, None)
        if claimed is not None:
            _remember(current_app.extensions["crm.db"], *claimed, response)
        return response

    def forget_unanswered(_error: BaseException | None) -> None:
        claimed = g.pop(_CLAIM, None)  # still here: no answer was made (an error escaped)
        if claimed is not None:
            _forget(current_app.extensions["crm.db"], *claimed)

    app.before_request(claim)
    app.after_request(remember)
    app.teardown_request(forget_unanswered)


def _claim(key: str) -> Response | None:
    """Take `key` for this request, or the answer to give instead (replay or refusal)."""
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        return _problem(400, "Bad Request", f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters")
    db = current_app.extensions["crm.db"]
    table = db.idempotency
    scope, fingerprint = _scope(), _fingerprint()
    with db.session() as session:
        row = session.execute(
            select(table).where(table.c.scope == scope, table.c.key == key)
        ).first()
    if row is not None:
        if row.fingerprint != fingerprint:
            return _problem(422, "Unprocessable Entity", f"{HEADER} was used for another request")
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
    g.setdefault(_CLAIM, (scope, key))
    return None


def _forget(db: Any, scope: str, key: str) -> None:
    table = db.idempotency
    with db.session() as session:
        session.execute(delete(table).where((table.c.scope == scope) & (table.c.key == key)))


def _remember(db: Any, scope: str, key: str, response: Response) -> None:
    table = db.idempotency
    where = (table.c.scope == scope) & (table.c.key == key)
    with db.session() as session:
        if response.status_code >= 400 or response.is_streamed:
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
