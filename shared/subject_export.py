"""The per-person export each service answers for the subject access export (GDPR Art. 15).

`GET /api/v1/subject-exports/<service>/<contact_id>?email=<address>` answers everything
the service holds on one person: the records that name the contact id, and where the
service keys records by address (suppressions, the delivery log, leads) those with the
email the gateway passes from the contacts service's answer. Nothing is paged or capped:
it is one person's data, asked for rarely, and a cut export would be a wrong one.

Admin only, here as at the gateway (which composes the services' answers into
`GET /api/v1/customers/{id}/export`). A malformed id is a 400, a malformed email or an
unknown query parameter a 422. A service that holds nothing on the person answers 200
with empty sections: only the contacts service, the source of the person, answers 404.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from shared.auth import require_role
from shared.events import utcnow
from shared.openapi import documented
from shared.web import ApiError, current_db, invalid

PATH_PREFIX = "/api/v1/subject-exports"
MAX_EMAIL = 254
QUERY_PARAMETERS = frozenset({"email"})
EMAIL_PARAMETER = {
    "in": "query",
    "name": "email",
    "description": "The person's address (from the contacts service): records kept by it.",
    "schema": {"type": "string", "maxLength": MAX_EMAIL},
}


@dataclass(frozen=True)
class Subject:
    """Whom an export is about: the contact id, and the lower-cased email if one is known."""

    contact_id: str
    email: str | None = None


Build = Callable[[Session, Subject], dict[str, Any]]


def export_path(service: str, contact_id: str) -> str:
    """The path of one service's export of one person."""
    return f"{PATH_PREFIX}/{service}/{contact_id}"


def checked_contact_id(value: str) -> str:
    """The id in its canonical form, or 400 (a person is named by a UUID)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(400, "Bad Request", f"{value!r} is not a contact id (a UUID)") from None


def checked_email(value: str | None) -> str | None:
    """The address lower-cased (what services compare), None if not given; 422 if malformed."""
    if value is None or value == "":
        return None
    local, at, domain = value.strip().rpartition("@")
    if len(value) > MAX_EMAIL or not at or not local or "." not in domain or " " in value:
        raise invalid({"email": ["Not a valid email address."]})
    return value.strip().lower()


def requested_subject(contact_id: str, args: Any) -> Subject:
    """The subject of a request: its checked id and email; unknown parameters are a 422."""
    unknown = sorted(set(args) - QUERY_PARAMETERS)
    if unknown:
        raise invalid({name: ["Unknown query parameter."] for name in unknown})
    return Subject(checked_contact_id(contact_id), checked_email(args.get("email")))


def columns(row: Any, leave_out: Iterable[str] = ()) -> dict[str, Any]:
    """Every column of a row, for records the API has no view of (ids, facts, replicas)."""
    skipped = set(leave_out)
    return {
        column.key: getattr(row, column.key)
        for column in inspect(row).mapper.column_attrs
        if column.key not in skipped
    }


def subject_export_blueprint(service: str, build: Build) -> Blueprint:
    """The blueprint of one service's export; `build` returns its sections for a subject."""
    blueprint = Blueprint(f"{service}_subject_export", __name__, url_prefix=PATH_PREFIX)

    @blueprint.get(f"/{service}/<contact_id>")
    @documented(parameters=[EMAIL_PARAMETER])
    def subject_export(contact_id: str) -> Response:
        """Everything this service holds on one person (admin only; ?email= as well)."""
        require_role()  # no role but admin
        subject = requested_subject(contact_id, request.args)
        with current_db().session() as session:
            sections = build(session, subject)
        body = {"service": service, "contact_id": subject.contact_id, "exported_at": utcnow()}
        return jsonify({**body, **sections})

    return blueprint
