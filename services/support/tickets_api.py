"""The tickets HTTP API: tickets, their list, search and batches, assignment, and comments."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.support import comments, csat, tickets
from services.support.models import Comment, Ticket
from services.support.ticket_queries import (
    SEARCH_FIELDS,
    list_statement,
    text_condition,
    ticket_sort,
)
from services.support.ticket_schemas import (
    AssignSchema,
    CommentInSchema,
    CommentListArgsSchema,
    TicketInSchema,
    TicketListArgsSchema,
    TicketPatchSchema,
    comment_view,
    ticket_view,
)
from shared.auth import current_principal, require_role
from shared.batch import read_batch, run_batch
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.schemas import BatchInputsSchema, BatchReadSchema, SearchSchema
from shared.search import search_condition
from shared.web import (
    created,
    created_with_etag,
    current_db,
    current_settings,
    expected_version,
    invalid,
    load_body,
    load_or_422,
    no_content,
    parse_args,
    with_etag,
)

tickets_api = Blueprint("tickets", __name__, url_prefix="/api/v1")

ticket_in = TicketInSchema()
ticket_patch = TicketPatchSchema()
COMMENT_SORTS = {"created_at": SortKey("created_at", Comment.created_at)}


def writer_id() -> str:
    """The caller, if they may change tickets (support or admin); else 403."""
    return require_role("support").subject


def _changes() -> dict[str, Any]:
    changes = load_body(ticket_patch, partial=True)
    if "id" in changes:
        raise invalid({"id": ["The id cannot change."]})
    return changes


def _created_ticket(body: dict[str, Any]) -> Any:
    return created_with_etag(body, f"/api/v1/tickets/{body['id']}")


ticket_list_query = TicketListArgsSchema()


@tickets_api.get("/tickets")
def list_tickets() -> Any:
    """Tickets matching the filters (status, priority, assignee, tag, breached, q...), paged."""
    args = parse_args(ticket_list_query, request.args)
    limit, cursor = list_params()
    sort = ticket_sort(args.get("sort"))
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, list_statement(args), sort, Ticket.id, limit=limit, cursor=cursor
        )
        items = [ticket_view(ticket) for ticket in rows]
        if "csat" in args.get("include", ()):
            ratings = csat.ratings_of(session, [ticket.id for ticket in rows])
            for item in items:
                rating = ratings.get(item["id"])
                item["csat"] = csat.rating_view(rating) if rating is not None else None
        return page_answer(items, next_cursor)


@tickets_api.post("/tickets")
def create_ticket() -> Any:
    """Open a ticket for a contact or for a new requester (201, Location, ETag)."""
    actor = writer_id()
    data = load_body(ticket_in)
    with current_db().session() as session:
        body = ticket_view(tickets.create_ticket(session, data, actor))
    return _created_ticket(body)


@tickets_api.get("/tickets/<uuid:ticket_id>")
def get_ticket(ticket_id: Any) -> Any:
    """One ticket, with its version as ETag."""
    with current_db().session() as session:
        return with_etag(ticket_view(tickets.get_ticket(session, ticket_id)))


@tickets_api.patch("/tickets/<uuid:ticket_id>")
def update_ticket(ticket_id: Any) -> Any:
    """Change fields, the assignee or the status of a ticket (If-Match honoured)."""
    writer_id()
    changes, version = _changes(), expected_version()
    with current_db().session() as session:
        ticket = tickets.lock_ticket(session, ticket_id)
        tickets.update_ticket(
            session, ticket, changes, settings=current_settings(), expected_version=version
        )
        body = ticket_view(ticket)
    return with_etag(body)


@tickets_api.delete("/tickets/<uuid:ticket_id>")
def delete_ticket(ticket_id: Any) -> Any:
    """Delete a ticket with its comments (204)."""
    writer_id()
    version = expected_version()
    with current_db().session() as session:
        ticket = tickets.lock_ticket(session, ticket_id)
        tickets.delete_ticket(session, ticket, expected_version=version)
    return no_content()


assign_in = AssignSchema()


@tickets_api.post("/tickets/<uuid:ticket_id>/assign")
def assign_ticket(ticket_id: Any) -> Any:
    """Give a ticket to an agent (`assignee_id`, null to unassign); a new ticket opens."""
    writer_id()
    data, version = load_body(assign_in), expected_version()
    with current_db().session() as session:
        ticket = tickets.lock_ticket(session, ticket_id)
        tickets.assign_ticket(session, ticket, data["assignee_id"], expected_version=version)
        body = ticket_view(ticket)
    return with_etag(body)


search_in = SearchSchema()


@tickets_api.post("/tickets/search")
def search_tickets() -> Any:
    """Tickets matching filter groups (OR of ANDs) and free text, paged."""
    spec = load_body(search_in)
    sort = ticket_sort(spec["sort"])
    statement = select(Ticket).where(search_condition(spec["filter_groups"], SEARCH_FIELDS))
    if spec["query"]:
        statement = statement.where(text_condition(spec["query"]))
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, Ticket.id, limit=spec["limit"], cursor=spec["cursor"]
        )
        return page_answer([ticket_view(ticket) for ticket in rows], next_cursor)


batch_inputs_in = BatchInputsSchema()


@tickets_api.post("/tickets/batch/create")
def batch_create() -> Any:
    """Open up to 100 tickets; 207 with a result per input when some fail."""
    actor = writer_id()
    inputs = load_body(batch_inputs_in)["inputs"]

    def apply(session: Session, raw: Any) -> Ticket:
        return tickets.create_ticket(session, load_or_422(ticket_in, raw), actor)

    return run_batch(inputs, apply, ticket_view, 201)


@tickets_api.post("/tickets/batch/update")
def batch_update() -> Any:
    """Change up to 100 tickets (each input names its id); 207 when some fail."""
    writer_id()
    inputs = load_body(batch_inputs_in)["inputs"]
    settings = current_settings()

    def apply(session: Session, raw: Any) -> Ticket:
        changes = load_or_422(ticket_patch, raw, partial=True)
        if not changes.get("id"):
            raise invalid({"id": ["An id is required."]})
        ticket = tickets.lock_ticket(session, changes.pop("id"))
        return tickets.update_ticket(session, ticket, changes, settings=settings)

    return run_batch(inputs, apply, ticket_view, 200)


batch_read_in = BatchReadSchema()


@tickets_api.post("/tickets/batch/read")
def batch_read() -> Any:
    """Read up to 100 tickets by id; 207 when some are missing."""
    ids = [str(ticket_id) for ticket_id in load_body(batch_read_in)["ids"]]
    return read_batch(ids, Ticket, ticket_view)


# --- comments ------------------------------------------------------------------------------


comment_list_query = CommentListArgsSchema()


@tickets_api.get("/tickets/<uuid:ticket_id>/comments")
def list_comments(ticket_id: Any) -> Any:
    """A ticket's comments, oldest first (filters: public, author_kind), paged."""
    args = parse_args(comment_list_query, request.args)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), COMMENT_SORTS, "created_at")
    with current_db().session() as session:
        ticket = tickets.get_ticket(session, ticket_id)
        statement = comments.comments_statement(ticket.id, args, current_principal())
        rows, next_cursor = paginate(
            session, statement, sort, Comment.id, limit=limit, cursor=cursor
        )
        return page_answer([comment_view(comment) for comment in rows], next_cursor)


comment_in_in = CommentInSchema()


@tickets_api.post("/tickets/<uuid:ticket_id>/comments")
def add_comment(ticket_id: Any) -> Any:
    """Reply to the customer or leave an internal note (201, Location)."""
    actor = writer_id()
    data = load_body(comment_in_in)
    with current_db().session() as session:
        ticket = tickets.lock_ticket(session, ticket_id)
        body = comment_view(comments.add_comment(session, ticket, data, actor))
    return created(body, f"/api/v1/tickets/{body['ticket_id']}/comments/{body['id']}")


@tickets_api.get("/tickets/<uuid:ticket_id>/comments/<uuid:comment_id>")
def get_comment(ticket_id: Any, comment_id: Any) -> Any:
    """One comment of a ticket."""
    with current_db().session() as session:
        tickets.get_ticket(session, ticket_id)
        comment = comments.get_comment(session, ticket_id, comment_id, current_principal())
        return comment_view(comment)
