"""Comments on tickets: public replies and internal notes, and what they do to the ticket.

A comment is a change to its ticket (a new version, `ticket.commented`), and it may move
the ticket's clocks and status:
- the first public reply by an agent is the ticket's first response (set once);
- a public agent reply to a `new` ticket opens it;
- a customer's comment on a `pending` ticket opens it again (the SLA clock resumes), and
  on a `resolved` ticket reopens it (`ticket.reopened`), as a reply to a solved ticket
  means the problem is not solved.
A closed ticket takes no comments (409).

An internal note (`public` false) is for the people who work tickets: support and admins
read it; for every other role it is in no list and its id is a 404. Its body never
leaves the service in an event (`ticket.commented` says only that there is one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from services.support import sla, tickets
from services.support.models import Comment, Ticket, new_id
from services.support.ticket_schemas import ticket_view
from shared.auth import Principal
from shared.events import isoformat, utcnow
from shared.outbox import record_event
from shared.web import conflict, not_found

# The roles that read internal notes; everyone else reads the public comments only.
NOTE_READERS = frozenset({"admin", "support"})


def reads_internal_notes(reader: Principal) -> bool:
    """Whether the caller may read a ticket's internal notes."""
    return reader.role in NOTE_READERS


def status_after_comment(ticket: Ticket, author_kind: str, public: bool) -> str:
    """The status a comment of this kind leaves the ticket in."""
    if author_kind == "agent" and public and ticket.status == "new":
        return "open"
    if author_kind == "customer" and ticket.status in ("pending", "resolved"):
        return "open"
    return ticket.status


def record_commented(session: Session, ticket: Ticket, comment: Comment) -> None:
    """`ticket.commented`: who said what; the body only when the customer may see it."""
    session.flush()
    data = {
        **ticket_view(ticket),
        "ticket_id": ticket.id,
        "comment_id": comment.id,
        "public": comment.public,
        "author_kind": comment.author_kind,
        "author_id": comment.author_id,
        "commented_at": isoformat(comment.created_at),
    }
    if comment.public:
        data["body"] = comment.body
    record_event(session, "ticket.commented", ticket.id, data, aggregate_version=ticket.version)


def add_comment(
    session: Session, ticket: Ticket, data: Mapping[str, Any], actor_id: str | None
) -> Comment:
    """Add a validated comment (body, public, author_kind) to a locked ticket.

    An agent's comment is the actor's; a customer's is the ticket's contact's.
    """
    if ticket.status == "closed":
        raise conflict("A closed ticket takes no comments: open a new ticket instead")
    author_kind = data.get("author_kind", "agent")
    public = bool(data.get("public", True))
    now = utcnow()
    comment = Comment(
        id=new_id(),
        ticket_id=ticket.id,
        body=data["body"],
        public=public,
        author_kind=author_kind,
        author_id=actor_id if author_kind == "agent" else ticket.contact_id,
        created_at=now,
    )
    session.add(comment)
    previous_status = ticket.status
    first_response = author_kind == "agent" and public and ticket.first_responded_at is None
    if first_response:
        ticket.first_responded_at = now
    target = status_after_comment(ticket, author_kind, public)
    tickets.apply_move(ticket, target, now)
    tickets.touch(ticket, now)
    if first_response or target != previous_status:
        sla.refresh(session, ticket, now, previous_status=previous_status)
    record_commented(session, ticket, comment)
    tickets.record_status_events(session, ticket, previous_status)
    return comment


def get_comment(session: Session, ticket_id: str, comment_id: str, reader: Principal) -> Comment:
    """A comment of this ticket the reader may see, or 404 (an internal note to others)."""
    comment = session.get(Comment, str(comment_id))
    if comment is None or comment.ticket_id != str(ticket_id):
        raise not_found("Comment", comment_id)
    if not comment.public and not reads_internal_notes(reader):
        raise not_found("Comment", comment_id)
    return comment


def comments_statement(ticket_id: str, args: Mapping[str, Any], reader: Principal) -> Select[Any]:
    """The comments of a ticket matching the list's (validated) filters that the reader
    may see: internal notes only for support and admins."""
    statement = select(Comment).where(Comment.ticket_id == str(ticket_id))
    if not reads_internal_notes(reader):
        statement = statement.where(Comment.public.is_(True))
    if args.get("public") is not None:
        statement = statement.where(Comment.public == args["public"])
    if args.get("author_kind") is not None:
        statement = statement.where(Comment.author_kind == args["author_kind"])
    return statement
