"""What support does when a person is erased or merged in the contacts service.

Erasure leaves no personal data of the person in this service: their tickets keep the
figures the reports need (status, priority, SLA stamps, times, the rating number) and
lose everything the person wrote or that names them. Copies in the outbox and in stored
idempotent answers go too.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.support import tickets
from services.support.models import Comment, CsatRating, ErasedContact, Ticket
from shared.events import utcnow
from shared.idempotency import forget_resource
from shared.outbox import redact_aggregate

ERASED = "(erased)"


def is_erased(session: Session, contact_id: str) -> bool:
    return session.get(ErasedContact, contact_id) is not None


def erase_contact(session: Session, contact_ids: Iterable[str]) -> list[str]:
    """Anonymise every ticket of these contacts and tombstone them; the ids of the tickets.

    Comments are deleted (their bodies are the person's words, or answers to them); a
    CSAT rating keeps its number for the statistics and loses its comment.
    """
    ids = sorted(set(contact_ids))
    now = utcnow()
    for contact_id in ids:
        if not is_erased(session, contact_id):
            session.add(ErasedContact(contact_id=contact_id, erased_at=now))
    tickets = list(session.scalars(select(Ticket).where(Ticket.contact_id.in_(ids))))
    for ticket in tickets:
        _anonymise_ticket(session, ticket)
    session.flush()
    return [ticket.id for ticket in tickets]


def _anonymise_ticket(session: Session, ticket: Ticket) -> None:
    ticket.subject = ERASED
    ticket.description = None
    ticket.requester_email = ticket.requester_name = None
    ticket.tags = []
    ticket.contact_id = None
    ticket.version += 1
    ticket.updated_at = utcnow()
    _delete_comments(session, ticket.id)
    rating = session.get(CsatRating, ticket.id)
    if rating is not None:
        rating.comment = None
    redact_aggregate(session, ticket.id, keep={"id": ticket.id})
    forget_resource(session, ticket.id)


def _delete_comments(session: Session, ticket_id: str) -> None:
    """Delete a ticket's comments and what the outbox and stored answers hold of them."""
    comment_ids = list(session.scalars(select(Comment.id).where(Comment.ticket_id == ticket_id)))
    for comment_id in comment_ids:
        redact_aggregate(session, comment_id, keep={"id": comment_id, "ticket_id": ticket_id})
        forget_resource(session, comment_id)
    if comment_ids:
        session.execute(
            delete(Comment)
            .where(Comment.ticket_id == ticket_id)
            .execution_options(synchronize_session="fetch")
        )


def repoint_contact(session: Session, duplicate_id: str, contact_id: str) -> list[Ticket]:
    """Move the tickets of a merged duplicate onto the surviving contact.

    Each moved ticket gets a new version and records `ticket.updated` as every ticket
    change does (services/support/tickets.py), with `changed: ["contact_id"]`.
    """
    moved = list(session.scalars(select(Ticket).where(Ticket.contact_id == duplicate_id)))
    now = utcnow()
    for ticket in moved:
        ticket.contact_id = contact_id
        tickets.touch(ticket, now)
        tickets.record_ticket_event(
            session,
            "ticket.updated",
            ticket,
            changed=["contact_id"],
            previous_contact_id=duplicate_id,
        )
    session.flush()
    return moved
