"""The support service's part of the subject access export: tickets, comments, ratings.

The person's tickets are those of the contact and those they wrote in from their email.
Every comment is in, internal notes too: they are staff's words about the person, which
the right of access covers (GDPR Art. 15); each says whether it is public or internal.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from services.support.csat import rating_view
from services.support.models import Comment, CsatRating, Ticket
from services.support.ticket_schemas import comment_view, ticket_view
from shared.subject_export import Subject, subject_export_blueprint


def people_tickets(session: Session, subject: Subject) -> list[Ticket]:
    """The tickets of the contact or from their address, oldest first."""
    condition = Ticket.contact_id == subject.contact_id
    if subject.email:
        condition = or_(condition, func.lower(Ticket.requester_email) == subject.email)
    statement = select(Ticket).where(condition).order_by(Ticket.created_at, Ticket.id)
    return list(session.scalars(statement))


def comment_export(comment: Comment) -> dict[str, Any]:
    """A comment, marked `internal` when the customer never saw it."""
    return {**comment_view(comment), "visibility": "public" if comment.public else "internal"}


def ticket_export(session: Session, ticket: Ticket) -> dict[str, Any]:
    """A ticket with all its comments and its rating."""
    comments = session.scalars(
        select(Comment)
        .where(Comment.ticket_id == ticket.id)
        .order_by(Comment.created_at, Comment.id)
    )
    rating = session.get(CsatRating, ticket.id)
    return {
        **ticket_view(ticket),
        "comments": [comment_export(comment) for comment in comments],
        "csat": rating_view(rating) if rating else None,
    }


def export_person(session: Session, subject: Subject) -> dict[str, Any]:
    """Every ticket of the person, with comments (internal notes marked) and CSAT."""
    tickets = [ticket_export(session, ticket) for ticket in people_tickets(session, subject)]
    return {
        "tickets": tickets,
        "csat": [ticket["csat"] for ticket in tickets if ticket["csat"]],
    }


subject_export_api = subject_export_blueprint("support", export_person)
