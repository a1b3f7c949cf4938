"""The webhooks HTTP API (admin only): subscriptions, their delivery history, replays.

The secret is shown once, in the answer to the create; afterwards only `secret_set`.
A PATCH may set a new secret (rotation) or `active: true` to re-enable a webhook that was
disabled after repeated failures.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from marshmallow import ValidationError, fields, post_load, validate, validates
from sqlalchemy import select

from services.notifications import webhooks
from services.notifications.models import DELIVERY_STATUSES, Webhook, WebhookDelivery
from shared.auth import require_role
from shared.events import isoformat
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.schemas import JsonBoolean, StrictSchema
from shared.web import (
    check_version,
    created_with_etag,
    current_db,
    current_settings,
    expected_version,
    invalid,
    load_body,
    no_content,
    parse_args,
    with_etag,
)

webhooks_api = Blueprint("webhooks", __name__, url_prefix="/api/v1")
BASE = "/webhooks"
WEBHOOK_SORTS = {
    "created_at": SortKey("created_at", Webhook.created_at),
    "updated_at": SortKey("updated_at", Webhook.updated_at),
}
# Newest first: the ordering of the (webhook_id, created_at, id) index, read backwards.
DELIVERY_SORT = [SortKey("created_at", WebhookDelivery.created_at, descending=True)]
PRINTABLE = validate.Regexp(r"^[\x21-\x7e]+$", error="Use printable ASCII without spaces.")


# --- schemas -------------------------------------------------------------------------------


class WebhookInSchema(StrictSchema):
    """A webhook as a client writes it (PATCH: the same fields, each optional)."""

    id = fields.UUID()
    url = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    event_types = fields.List(
        fields.String(validate=validate.Length(min=1, max=128)),
        required=True,
        validate=validate.Length(min=1, max=100),
    )
    secret = fields.String(validate=[validate.Length(min=16, max=200), PRINTABLE])
    active = JsonBoolean()

    @validates("url")
    def valid_url(self, value: str, **_: Any) -> None:
        """https, or http to localhost; a host; no credentials."""
        networks = current_settings().extra.get("webhook_allowed_networks", ())
        problem = webhooks.url_problem(value, webhooks.allowed_networks(networks))
        if problem:
            raise ValidationError(problem)

    @validates("event_types")
    def valid_patterns(self, value: list[str], **_: Any) -> None:
        """Every entry an event-type pattern."""
        bad = sorted({pattern for pattern in value if not webhooks.is_pattern(pattern)})
        if bad:
            raise ValidationError(
                f"Not event-type patterns: {', '.join(bad)}. " + (webhooks.PATTERN_HELP)
            )

    @post_load
    def distinct_patterns(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """Each pattern once, in the order given."""
        if "event_types" in data:
            data["event_types"] = list(dict.fromkeys(data["event_types"]))
        return data


webhook_in_in = WebhookInSchema()


class WebhookListArgsSchema(StrictSchema):
    active = fields.Boolean()
    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


webhook_list_query = WebhookListArgsSchema()


class DeliveryListArgsSchema(StrictSchema):
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))
    event_type = fields.String(validate=validate.Length(max=128))
    limit = fields.String()
    cursor = fields.String()


delivery_list_query = DeliveryListArgsSchema()


class NoBodySchema(StrictSchema):
    """An action that takes no fields (an empty object, or no body at all)."""


no_body_in = NoBodySchema()


# --- representations -----------------------------------------------------------------------


def _moment(value: Any) -> str | None:
    return isoformat(value) if value is not None else None


def webhook_view(webhook: Webhook, *, with_secret: bool = False) -> dict[str, Any]:
    """A webhook as the API answers it: the secret only when just created."""
    body: dict[str, Any] = {
        "id": webhook.id,
        "url": webhook.url,
        "event_types": list(webhook.event_types or []),
        "active": webhook.active,
        "secret_set": bool(webhook.secret),
        "consecutive_failures": webhook.consecutive_failures,
        "disabled_at": _moment(webhook.disabled_at),
        "version": webhook.version,
        "created_at": _moment(webhook.created_at),
        "updated_at": _moment(webhook.updated_at),
    }
    if with_secret:
        body["secret"] = webhook.secret
    return body


def delivery_view(delivery: WebhookDelivery, *, with_payload: bool = False) -> dict[str, Any]:
    """One delivery and its attempts so far (the payload only when asked for one)."""
    body: dict[str, Any] = {
        "id": delivery.id,
        "webhook_id": delivery.webhook_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "delivered_at": _moment(delivery.delivered_at),
        "next_attempt_at": _moment(delivery.next_attempt_at),
        "created_at": _moment(delivery.created_at),
        "updated_at": _moment(delivery.updated_at),
    }
    if with_payload:
        body["payload"] = delivery.payload
    return body


# --- HTTP ----------------------------------------------------------------------------------


@webhooks_api.get(BASE)
def list_webhooks() -> Any:
    """Webhooks, oldest first (or ?sort=), filtered by ?active=, paged."""
    require_role()
    args = parse_args(webhook_list_query)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), WEBHOOK_SORTS, "created_at")
    statement = select(Webhook)
    if "active" in args:
        statement = statement.where(Webhook.active.is_(args["active"]))
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, Webhook.id, limit=limit, cursor=cursor
        )
        return page_answer([webhook_view(webhook) for webhook in rows], next_cursor)


@webhooks_api.post(BASE)
def create() -> Any:
    """Create a webhook (201); the answer carries the secret, this once."""
    require_role()
    data = load_body(webhook_in_in)
    with current_db().session() as session:
        body = webhook_view(webhooks.create_webhook(session, data), with_secret=True)
    return created_with_etag(body, f"/api/v1{BASE}/{body['id']}")


@webhooks_api.get(f"{BASE}/<uuid:webhook_id>")
def get(webhook_id: Any) -> Any:
    """One webhook (without its secret), with its version as ETag."""
    require_role()
    with current_db().session() as session:
        return with_etag(webhook_view(webhooks.get_webhook(session, webhook_id)))


@webhooks_api.patch(f"{BASE}/<uuid:webhook_id>")
def update(webhook_id: Any) -> Any:
    """Change a webhook (If-Match honoured); `active: true` re-enables a disabled one."""
    require_role()
    changes = load_body(webhook_in_in, partial=True)
    if "id" in changes:
        raise invalid({"id": ["The id cannot change."]})
    with current_db().session() as session:
        webhook = webhooks.get_webhook(session, webhook_id, for_update=True)
        webhooks.update_webhook(session, webhook, changes, expected_version=expected_version())
        body = webhook_view(webhook)
    return with_etag(body)


@webhooks_api.delete(f"{BASE}/<uuid:webhook_id>")
def delete(webhook_id: Any) -> Any:
    """Delete a webhook and its delivery history (204, If-Match honoured)."""
    require_role()
    with current_db().session() as session:
        webhook = webhooks.get_webhook(session, webhook_id, for_update=True)
        check_version(webhook.version, expected_version())
        session.delete(webhook)
    return no_content()


@webhooks_api.get(f"{BASE}/<uuid:webhook_id>/deliveries")
def list_deliveries(webhook_id: Any) -> Any:
    """A webhook's deliveries, newest first, filtered by ?status= and ?event_type=."""
    require_role()
    args = parse_args(delivery_list_query)
    limit, cursor = list_params()
    statement = select(WebhookDelivery).where(WebhookDelivery.webhook_id == str(webhook_id))
    for name in ("status", "event_type"):
        if name in args:
            statement = statement.where(getattr(WebhookDelivery, name) == args[name])
    with current_db().session() as session:
        webhooks.get_webhook(session, webhook_id)
        rows, next_cursor = paginate(
            session, statement, DELIVERY_SORT, WebhookDelivery.id, limit=limit, cursor=cursor
        )
        return page_answer([delivery_view(delivery) for delivery in rows], next_cursor)


@webhooks_api.get(f"{BASE}/<uuid:webhook_id>/deliveries/<uuid:delivery_id>")
def get_delivery(webhook_id: Any, delivery_id: Any) -> Any:
    """One delivery with the payload it sends."""
    require_role()
    with current_db().session() as session:
        delivery = webhooks.get_delivery(session, webhook_id, delivery_id)
        return delivery_view(delivery, with_payload=True)


@webhooks_api.post(f"{BASE}/<uuid:webhook_id>/deliveries/<uuid:delivery_id>/replay")
def replay(webhook_id: Any, delivery_id: Any) -> Any:
    """Queue a failed (or delivered) delivery again, due now; 409 if it is pending."""
    require_role()
    if request.get_data(cache=True):
        load_body(no_body_in)
    with current_db().session() as session:
        delivery = webhooks.get_delivery(session, webhook_id, delivery_id, for_update=True)
        body = delivery_view(webhooks.replay_delivery(session, delivery))
    return body
