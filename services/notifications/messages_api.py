"""The messages HTTP API: the delivery log (every email and what became of it), and sending one.

- `GET /messages`: the log, newest first, filtered by status, to, contact_id, campaign_id,
  category; cursor pages.
- `GET /messages/{id}`: one message, with its bodies.
- `POST /messages`: send one email now (202: it is queued; the worker delivers it).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from marshmallow import fields, validate
from sqlalchemy import select

from services.notifications.models import CATEGORIES, MESSAGE_STATUSES, Message
from services.notifications.sending import MAX_BODY, MAX_SUBJECT, queue_message
from shared.auth import require_role
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.schemas import StrictSchema
from shared.web import current_db, load_body, not_found, parse_args

messages_api = Blueprint("messages", __name__, url_prefix="/api/v1")

SENDER_ROLES = ("support", "sales", "marketing")  # and admin
MESSAGE_SORTS = {"created_at": SortKey("created_at", Message.created_at)}


class MessageInSchema(StrictSchema):
    """One email to send now (the address rules are checked by queue_message)."""

    to = fields.String(required=True, validate=validate.Length(min=1, max=254))
    subject = fields.String(required=True, validate=validate.Length(min=1, max=MAX_SUBJECT))
    body_text = fields.String(required=True, validate=validate.Length(max=MAX_BODY))
    body_html = fields.String(allow_none=True, validate=validate.Length(max=MAX_BODY))
    category = fields.String(validate=validate.OneOf(CATEGORIES))
    contact_id = fields.UUID(allow_none=True)


message_in_in = MessageInSchema()


class MessageListArgsSchema(StrictSchema):
    """The delivery log's filters and paging."""

    status = fields.String(validate=validate.OneOf(MESSAGE_STATUSES))
    to = fields.String(validate=validate.Length(min=1, max=254))
    contact_id = fields.UUID()
    campaign_id = fields.UUID()
    category = fields.String(validate=validate.OneOf(CATEGORIES))
    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


message_list_query = MessageListArgsSchema()


def message_view(message: Message, *, with_bodies: bool = False) -> dict[str, Any]:
    """A message as the API answers it; the bodies only when asked for (one message)."""
    view = {
        "id": message.id,
        "to": message.to_address,
        "from": message.from_address,
        "subject": message.subject,
        "status": message.status,
        "category": message.category,
        "attempts": message.attempts,
        "last_error": message.last_error,
        "sent_at": message.sent_at,
        "failed_at": message.failed_at,
        "opened_at": message.opened_at,
        "open_count": message.open_count,
        "click_count": message.click_count,
        "contact_id": message.contact_id,
        "campaign_id": message.campaign_id,
        "template_id": message.template_id,
        "cause_event_id": message.cause_event_id,
        "cause_event_type": message.cause_event_type,
        "created_at": message.created_at,
        "updated_at": message.updated_at,
    }
    if with_bodies:
        view.update(
            body_text=message.body_text, body_html=message.body_html, headers=message.headers
        )
    return view


def list_statement(args: dict[str, Any]) -> Any:
    """The log's SELECT with the filters given."""
    statement = select(Message)
    if "to" in args:
        statement = statement.where(Message.to_key == args["to"].strip().lower())
    for name in ("status", "contact_id", "campaign_id", "category"):
        if name in args:
            statement = statement.where(getattr(Message, name) == args[name])
    return statement


@messages_api.get("/messages")
def list_messages() -> Any:
    """The delivery log, newest first, filtered and paged."""
    args = parse_args(message_list_query)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), MESSAGE_SORTS, "-created_at")
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, list_statement(args), sort, Message.id, limit=limit, cursor=cursor
        )
        return page_answer([message_view(message) for message in rows], next_cursor)


@messages_api.get("/messages/<uuid:message_id>")
def get_message(message_id: Any) -> Any:
    """One message of the log, with its bodies and headers."""
    with current_db().session() as session:
        message = session.get(Message, str(message_id))
        if message is None:
            raise not_found("Message", message_id)
        return message_view(message, with_bodies=True)


@messages_api.post("/messages")
def send_message() -> Any:
    """Send one email now: 202 with the queued message (failed at once if suppressed)."""
    require_role(*SENDER_ROLES)
    data = load_body(message_in_in)
    with current_db().session() as session:
        message = queue_message(
            session,
            message_id=None,
            to=data["to"],
            subject=data["subject"],
            body_text=data["body_text"],
            body_html=data.get("body_html"),
            category=data.get("category", "transactional"),
            contact_id=data.get("contact_id"),
        )
        body = message_view(message, with_bodies=True)
    response = jsonify(body)
    response.status_code = 202
    response.headers["Location"] = f"/api/v1/messages/{body['id']}"
    return response
