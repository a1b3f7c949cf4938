"""Customer satisfaction: the signed rating link, and one rating per resolved ticket.

The link a customer follows from the CSAT email carries a token instead of a login: the
ticket id and a time stamp, signed (itsdangerous, salt "crm.csat") with the CSAT_LINK key
derived from the secret (`shared.keys`), so no token of another purpose verifies here.
A link is good for `CSAT_LINK_DAYS` days after the ticket was resolved. A token that is
tampered with, expired or not ours reads as "no such ticket" (404).
"""

from __future__ import annotations

import uuid
from typing import Any

from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.support.models import CsatRating, Ticket
from shared.config import Settings
from shared.keys import CSAT_LINK, purpose_key
from shared.outbox import record_event
from shared.web import ApiError, conflict, invalid, not_found

SALT = "crm.csat"
CSAT_LINK_DAYS = 30  # default; `settings.extra["csat_link_days"]` overrides it
MAX_TOKEN_CHARS = 512
MAX_COMMENT_CHARS = 5000
RATINGS = range(1, 6)
SCORE_NAMES = {1: "Very poor", 2: "Poor", 3: "Okay", 4: "Good", 5: "Excellent"}
RATEABLE_STATUSES = ("resolved", "closed")


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(purpose_key(settings.jwt_secret, CSAT_LINK), salt=SALT)


def _link_seconds(settings: Settings) -> int:
    return int(settings.extra.get("csat_link_days", CSAT_LINK_DAYS)) * 86400


def csat_token(settings: Settings, ticket_id: str) -> str:
    """The signed token of a ticket's rating link (`/api/v1/csat/{token}`)."""
    return _serializer(settings).dumps(str(ticket_id))


def ticket_id_of(settings: Settings, token: str) -> str:
    """The ticket a rating token names; 404 when it is malformed, tampered or expired."""
    missing = ApiError(404, "Not Found", "This rating link is not valid or has expired")
    if len(token) > MAX_TOKEN_CHARS:
        raise missing
    try:
        value = _serializer(settings).loads(token, max_age=_link_seconds(settings))
    except BadData:
        raise missing from None
    try:
        return str(uuid.UUID(value))
    except (TypeError, ValueError, AttributeError):
        raise missing from None


def _check_input(rating: Any, comment: str | None) -> None:
    errors: dict[str, list[str]] = {}
    if isinstance(rating, bool) or not isinstance(rating, int) or rating not in RATINGS:
        errors["rating"] = ["Must be a whole number from 1 to 5."]
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
        errors["comment"] = [f"Must be text of at most {MAX_COMMENT_CHARS} characters."]
    if errors:
        raise invalid(errors)


def record_rating(session: Session, ticket: Ticket, rating: int, comment: str | None) -> CsatRating:
    """Store the rating of a resolved or closed ticket, once, and record `ticket.csat_recorded`.

    Callers pass the ticket locked (`tickets.lock_ticket`): two ratings racing then run
    one after the other and the second is a 409; the primary key backs this up.

    409 when the ticket is not resolved or closed, or already rated; 422 for a rating
    outside 1-5 or a comment too long. The ticket's assignee is kept with the rating,
    so reports per agent stay true when the ticket is reassigned later.
    """
    _check_input(rating, comment)
    if ticket.status not in RATEABLE_STATUSES:
        raise conflict(f"Ticket {ticket.id} is {ticket.status}: only a resolved ticket is rated")
    if session.get(CsatRating, ticket.id) is not None:
        raise conflict(f"Ticket {ticket.id} is already rated")
    entry = CsatRating(
        ticket_id=ticket.id, rating=rating, comment=comment or None, assignee_id=ticket.assignee_id
    )
    session.add(entry)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise conflict(f"Ticket {ticket.id} is already rated") from None
    record_event(session, "ticket.csat_recorded", ticket.id, rating_event_data(ticket, entry))
    return entry


def rating_event_data(ticket: Ticket, entry: CsatRating) -> dict[str, Any]:
    """The data of `ticket.csat_recorded`."""
    return {
        "ticket_id": ticket.id,
        "contact_id": ticket.contact_id,
        "assignee_id": entry.assignee_id,
        "rating": entry.rating,
        "comment": entry.comment,
    }


def rating_view(entry: CsatRating) -> dict[str, Any]:
    """A rating as the API shows it; its id is its ticket's (one rating per ticket)."""
    return {
        "id": entry.ticket_id,
        "ticket_id": entry.ticket_id,
        "rating": entry.rating,
        "comment": entry.comment,
        "assignee_id": entry.assignee_id,
        "created_at": entry.created_at,
    }


def ratings_of(session: Session, ticket_ids: list[str]) -> dict[str, CsatRating]:
    """The ratings of these tickets (one query), by ticket id; unrated ones are absent."""
    if not ticket_ids:
        return {}
    found = session.scalars(select(CsatRating).where(CsatRating.ticket_id.in_(ticket_ids)))
    return {entry.ticket_id: entry for entry in found}


def rating_of(session: Session, ticket_id: str) -> CsatRating:
    """The rating of a ticket; 404 when the ticket is unknown or not rated yet."""
    if session.get(Ticket, str(ticket_id)) is None:
        raise not_found("Ticket", ticket_id)
    entry = session.get(CsatRating, str(ticket_id))
    if entry is None:
        raise ApiError(404, "Not Found", f"Ticket {ticket_id} has no rating yet")
    return entry


def public_view(session: Session, ticket: Ticket) -> dict[str, Any]:
    """What the rating page may show anyone holding the link: the subject and the state."""
    rated = session.get(CsatRating, ticket.id) is not None
    return {
        "subject": ticket.subject,
        "rated": rated,
        "can_rate": not rated and ticket.status in RATEABLE_STATUSES,
    }
