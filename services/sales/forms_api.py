"""The public lead-capture endpoint: web forms post leads here without a token.

Open to anyone, so it protects itself: a honeypot field, a small body limit, strict
fields, and a per-client rate limit counted in the database (so it holds across gunicorn
workers and replicas). It always answers 202 `{"status": "received"}` on success and
never tells whether the email belonged to a lead already.

The client is the address the gateway saw: the gateway appends it to X-Forwarded-For.
Call `trusted_proxy(app)` in the app factory so `request.remote_addr` is that address.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, jsonify, request
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from services.sales import leads, scoring
from services.sales.lead_schemas import FormLeadSchema
from services.sales.models import OPEN_LEAD_STATUSES, FormSubmission, Lead
from shared.db import take_write_lock
from shared.events import utcnow
from shared.keys import CLIENT_ADDRESS, purpose_key
from shared.web import (
    ApiError,
    current_db,
    current_settings,
    form_fields,
    json_body,
    load_or_422,
)

log = logging.getLogger(__name__)

forms_api = Blueprint("forms", __name__, url_prefix="/api/v1/forms")

FORM_MAX_BYTES = 16 * 1024
HONEYPOT = "nickname"
DEFAULT_RATE_LIMIT = 10  # accepted submissions per client and window
DEFAULT_RATE_WINDOW_SECONDS = 60
RETENTION = timedelta(days=1)
GLOBAL_PURGE_CHANCE = 0.01
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
RECEIVED = {"status": "received"}

form_in = FormLeadSchema()


def trusted_proxy(app: Flask) -> None:
    """Trust one proxy hop (the gateway): remote_addr becomes the last X-Forwarded-For entry."""
    if app.extensions.get("sales.trusted_proxy"):
        return
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    app.extensions["sales.trusted_proxy"] = True


def client_key(address: str, key: bytes) -> str:
    """A keyed hash of the client address (the CLIENT_ADDRESS key): enough to count posts,
    no address kept."""
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()


def _too_large() -> ApiError:
    return ApiError(413, "Content Too Large", f"A form post is limited to {FORM_MAX_BYTES} bytes")


def form_input() -> dict[str, Any]:
    """The posted fields, from JSON or an HTML form; empty values count as not given."""
    request.max_content_length = FORM_MAX_BYTES
    if request.content_length is not None and request.content_length > FORM_MAX_BYTES:
        raise _too_large()
    try:
        data = form_fields() if request.mimetype in FORM_TYPES else json_body()
    except RequestEntityTooLarge:
        raise _too_large() from None
    if not isinstance(data, dict):
        raise ApiError(400, "Bad Request", "The request body must be a JSON object")
    return {name: value for name, value in data.items() if value not in ("", None)}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def claim_slot(session: Session, key: str, limit: int, window_seconds: int) -> FormSubmission:
    """Count this client's posts in the window and add one; 429 with Retry-After if full.

    The count and the insert happen under a lock on the client (an advisory lock on
    PostgreSQL, the write lock on SQLite), so concurrent posts cannot all slip through.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(int(key[:15], 16))))
    else:
        take_write_lock(session)
    now = utcnow()
    since = now - timedelta(seconds=window_seconds)
    recent = session.scalars(
        select(FormSubmission.submitted_at)
        .where(FormSubmission.client_key == key, FormSubmission.submitted_at > since)
        .order_by(FormSubmission.submitted_at)
        .limit(limit)
    ).all()
    if len(recent) >= limit:
        wait = _aware(recent[0]) + timedelta(seconds=window_seconds) - now
        retry_after = str(max(1, math.ceil(wait.total_seconds())))
        raise ApiError(
            429,
            "Too Many Requests",
            f"Too many form posts from this client; try again in {retry_after} seconds",
            headers={"Retry-After": retry_after},
        )
    submission = FormSubmission(client_key=key, submitted_at=now)
    session.add(submission)
    return submission


def _locked_open_lead(session: Session, email: str) -> Lead | None:
    """The open lead with this email, locked; None if there is none (any more)."""
    found = leads.find_open_lead_by_email(session, email)
    if found is None:
        return None
    lead = leads.lock_lead(session, found.id)
    return lead if lead.status in OPEN_LEAD_STATUSES else None


def capture(session: Session, data: dict[str, Any]) -> Lead:
    """The lead a form post is about: new, or the open lead with its email (gaps filled).

    Either way the post counts as `form_submitted` behaviour in the lead's score.
    """
    lead = _locked_open_lead(session, data["email"])
    if lead is None:
        try:
            lead = leads.create_lead(session, {**data, "owner_id": None}, None)
        except ApiError as error:  # another post made the lead meanwhile
            lead = _locked_open_lead(session, data["email"])
            if error.status != 409 or lead is None:
                raise
            leads.fill_empty_fields(session, lead, data)
    else:
        leads.fill_empty_fields(session, lead, data)
    scoring.record_behaviour(session, lead, "form_submitted", None, utcnow())
    return lead


def purge_submissions(session: Session, key: str | None = None) -> int:
    """Forget submissions older than a day (one client's, or everyone's); how many."""
    statement = delete(FormSubmission).where(FormSubmission.submitted_at < utcnow() - RETENTION)
    if key is not None:
        statement = statement.where(FormSubmission.client_key == key)
    return session.execute(statement).rowcount or 0


@forms_api.post("/leads")
def submit_lead() -> Any:
    settings = current_settings()
    key = client_key(
        request.remote_addr or "unknown", purpose_key(settings.jwt_secret, CLIENT_ADDRESS)
    )
    data = form_input()
    if str(data.get(HONEYPOT, "")).strip():
        log.info("form honeypot filled: submission dropped", extra={"client_key": key[:12]})
        return jsonify(RECEIVED), 202
    data = load_or_422(form_in, data)
    data.pop(HONEYPOT, None)
    limit = int(settings.extra.get("form_rate_limit", DEFAULT_RATE_LIMIT))
    window = int(settings.extra.get("form_rate_window_seconds", DEFAULT_RATE_WINDOW_SECONDS))
    with current_db().session() as session:
        submission = claim_slot(session, key, limit, window)
        submission.lead_id = capture(session, data).id
        purge_submissions(session, key)
        if random.random() < GLOBAL_PURGE_CHANCE:
            purge_submissions(session)
    return jsonify(RECEIVED), 202
