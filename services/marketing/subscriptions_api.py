"""The subscriptions HTTP API: mailing lists, and each contact's subscription to them.

- `/api/v1/subscription-lists` {id, name (unique, case-insensitive), description,
  double_opt_in, version, created_at, updated_at}: list (?q=, sorted by name), create,
  read, PATCH (If-Match honoured), DELETE (409 while anyone is subscribed or pending; the
  unsubscribed rows go with it, the ledger keeps its lines).
- `/api/v1/subscriptions` {id, contact_id, list_id, list, status, source, consented_at,
  created_at, updated_at, version}: list (?contact_id=, ?list_id=, ?status=, ?source=),
  read, and POST {contact_id, list_id (default: the "newsletter" list), status
  (subscribed|unsubscribed), source, double_opt_in, ip, user_agent (the consent's proof,
  when a form collected it)}: 201 when the row is new, 200 when it existed (the same
  status again changes nothing). See `subscriptions` for double opt-in and suppressions.
- The suppression and ledger routes come from `consent_api`, registered inside this one.

Writes need the role marketing (or admin); every role reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, jsonify
from marshmallow import ValidationError, fields, validate, validates_schema
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from services.marketing import subscriptions
from services.marketing.consent_api import consent_api
from services.marketing.ledger import Origin
from services.marketing.models import Subscription, SubscriptionList, new_id
from shared.auth import current_principal, require_role
from shared.db import take_write_lock
from shared.events import isoformat, utcnow
from shared.openapi import documented
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.schemas import JsonBoolean, StrictSchema
from shared.search import words_condition
from shared.web import (
    check_version,
    conflict,
    created,
    created_with_etag,
    current_db,
    current_settings,
    expected_version,
    invalid,
    load_body,
    no_content,
    not_found,
    parse_args,
    with_etag,
)

subscriptions_api = Blueprint("subscriptions", __name__, url_prefix="/api/v1")
subscriptions_api.register_blueprint(consent_api)

LISTS = "/subscription-lists"
SUBSCRIPTIONS = "/subscriptions"
NOT_BLANK = validate.Regexp(r"^\s*\S", error="Cannot be blank.")
LIST_SORTS = {
    "name": SortKey("name", SubscriptionList.name),
    "created_at": SortKey("created_at", SubscriptionList.created_at),
}
SUBSCRIPTION_SORTS = {
    "created_at": SortKey("created_at", Subscription.created_at),
    "updated_at": SortKey("updated_at", Subscription.updated_at),
}


# --- schemas and views --------------------------------------------------------------------


def _name(**kwargs: Any) -> fields.String:
    return fields.String(validate=[validate.Length(min=1, max=100), NOT_BLANK], **kwargs)


class ListPatchSchema(StrictSchema):
    """The fields of a mailing list; a PATCH gives any of them."""

    name = _name()
    description = fields.String(allow_none=True, validate=validate.Length(max=1000))
    double_opt_in = JsonBoolean()


list_patch_in = ListPatchSchema()


class ListInSchema(ListPatchSchema):
    """A new mailing list: a name at least."""

    id = fields.UUID(load_default=None)
    name = _name(required=True)
    description = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=1000)
    )
    double_opt_in = JsonBoolean(load_default=False)


list_in_in = ListInSchema()


class ListArgsSchema(StrictSchema):
    q = fields.String(validate=validate.Length(max=200))
    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


list_query = ListArgsSchema()


class SubscriptionInSchema(StrictSchema):
    """A contact subscribed to, or unsubscribed from, a list."""

    contact_id = fields.UUID(required=True)
    list_id = fields.UUID(load_default=None)
    status = fields.String(
        required=True,
        validate=validate.OneOf((subscriptions.SUBSCRIBED, subscriptions.UNSUBSCRIBED)),
    )
    source = fields.String(load_default="api", validate=validate.OneOf(subscriptions.API_SOURCES))
    double_opt_in = JsonBoolean(load_default=None, allow_none=True)
    ip = fields.IP(load_default=None, allow_none=True)
    user_agent = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=300)
    )

    @validates_schema
    def only_subscribing_is_confirmed(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("double_opt_in") and data.get("status") != subscriptions.SUBSCRIBED:
            raise ValidationError("Only subscribing can ask for double opt-in.", "double_opt_in")


subscription_in_in = SubscriptionInSchema()


class SubscriptionArgsSchema(StrictSchema):
    contact_id = fields.UUID()
    list_id = fields.UUID()
    status = fields.String(validate=validate.OneOf(subscriptions.STATUSES))
    source = fields.String(validate=validate.Length(max=30))
    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


subscription_query = SubscriptionArgsSchema()


def list_view(sub_list: SubscriptionList) -> dict[str, Any]:
    """A mailing list as the API shows it."""
    return {
        "id": sub_list.id,
        "name": sub_list.name,
        "description": sub_list.description,
        "double_opt_in": sub_list.double_opt_in,
        "version": sub_list.version,
        "created_at": isoformat(sub_list.created_at),
        "updated_at": isoformat(sub_list.updated_at),
    }


def subscription_view(row: Subscription, list_name: str | None) -> dict[str, Any]:
    """A subscription as the API shows it."""
    return {
        "id": row.id,
        "contact_id": row.contact_id,
        "list_id": row.list_id,
        "list": list_name,
        "status": row.status,
        "source": row.source,
        "consented_at": isoformat(row.consented_at) if row.consented_at else None,
        "created_at": isoformat(row.created_at),
        "updated_at": isoformat(row.updated_at),
        "version": row.version,
    }


# --- mailing lists ------------------------------------------------------------------------


def get_list(session: Session, list_id: Any, *, for_update: bool = False) -> SubscriptionList:
    """A mailing list by id, or 404 (locked when asked)."""
    statement = select(SubscriptionList).where(SubscriptionList.id == str(list_id))
    if for_update:
        take_write_lock(session)
        statement = statement.with_for_update()
    sub_list = session.scalars(statement).first()
    if sub_list is None:
        raise not_found("Subscription list", list_id)
    return sub_list


def _ensure_name_free(session: Session, name: str, list_id: str | None = None) -> None:
    lower = func.lower(SubscriptionList.name) == name.lower()
    other = session.scalars(select(SubscriptionList).where(lower)).first()
    if other is not None and other.id != list_id:
        raise conflict(
            f"A list named {name!r} exists already: {other.id}",
            {"name": ["A list with this name exists already."]},
        )


def create_list(session: Session, data: Mapping[str, Any]) -> SubscriptionList:
    """A new mailing list; 409 when its id or name is taken."""
    take_write_lock(session)
    list_id = str(data.get("id") or new_id())
    if session.get(SubscriptionList, list_id) is not None:
        raise conflict(f"A list with id {list_id} exists already")
    name = data["name"].strip()
    _ensure_name_free(session, name)
    now = utcnow()
    sub_list = SubscriptionList(
        **{**data, "id": list_id, "name": name}, version=1, created_at=now, updated_at=now
    )
    session.add(sub_list)
    session.flush()
    return sub_list


def update_list(
    session: Session, sub_list: SubscriptionList, changes: Mapping[str, Any], version: int | None
) -> SubscriptionList:
    """Change some fields (a new version when something changes); 409 on a taken name."""
    check_version(sub_list.version, version)
    changes = {**changes, **({"name": changes["name"].strip()} if "name" in changes else {})}
    changes = {key: value for key, value in changes.items() if getattr(sub_list, key) != value}
    if not changes:
        return sub_list
    if "name" in changes:
        _ensure_name_free(session, changes["name"], sub_list.id)
    for key, value in changes.items():
        setattr(sub_list, key, value)
    sub_list.version += 1
    sub_list.updated_at = utcnow()
    session.flush()
    return sub_list


def delete_list(session: Session, sub_list: SubscriptionList, version: int | None) -> None:
    """Delete a list nobody is subscribed to (or pending on); else 409."""
    check_version(sub_list.version, version)
    members = select(func.count()).where(
        Subscription.list_id == sub_list.id,
        Subscription.status.in_(subscriptions.OPEN_STATUSES),
    )
    if session.scalar(members):
        raise conflict(f"List {sub_list.id} has subscribers: unsubscribe them first")
    session.execute(delete(Subscription).where(Subscription.list_id == sub_list.id))
    session.delete(sub_list)


def writer() -> None:
    """Marketing and admins change consent; else 403."""
    require_role("marketing")


@subscriptions_api.get(LISTS)
def list_lists() -> Any:
    """Mailing lists sorted by name (or ?sort=), filtered by ?q=, paged."""
    args = parse_args(list_query)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), LIST_SORTS, "name")
    statement = select(SubscriptionList)
    statement = statement.where(
        words_condition(args.get("q"), SubscriptionList.name, SubscriptionList.description)
    )
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, SubscriptionList.id, limit=limit, cursor=cursor
        )
        return page_answer([list_view(row) for row in rows], next_cursor)


@subscriptions_api.post(LISTS)
def create_list_route() -> Any:
    """Create a mailing list (201, Location, ETag); 409 if the name is taken."""
    writer()
    data = load_body(list_in_in)
    with current_db().session() as session:
        body = list_view(create_list(session, data))
    return created_with_etag(body, f"/api/v1{LISTS}/{body['id']}")


@subscriptions_api.get(f"{LISTS}/<uuid:list_id>")
def read_list(list_id: Any) -> Any:
    with current_db().session() as session:
        return with_etag(list_view(get_list(session, list_id)))


@subscriptions_api.patch(f"{LISTS}/<uuid:list_id>")
def update_list_route(list_id: Any) -> Any:
    """Change a mailing list (If-Match honoured)."""
    writer()
    changes, version = load_body(list_patch_in), expected_version()
    with current_db().session() as session:
        sub_list = get_list(session, list_id, for_update=True)
        body = list_view(update_list(session, sub_list, changes, version))
    return with_etag(body)


@subscriptions_api.delete(f"{LISTS}/<uuid:list_id>")
def delete_list_route(list_id: Any) -> Any:
    """Delete a mailing list nobody is subscribed to (204)."""
    writer()
    version = expected_version()
    with current_db().session() as session:
        delete_list(session, get_list(session, list_id, for_update=True), version)
    return no_content()


# --- subscriptions ------------------------------------------------------------------------


def _list_names(session: Session, rows: list[Subscription]) -> dict[str, str]:
    ids = sorted({row.list_id for row in rows})
    statement = select(SubscriptionList.id, SubscriptionList.name).where(
        SubscriptionList.id.in_(ids)
    )
    return {list_id: name for list_id, name in session.execute(statement)}


@subscriptions_api.get(SUBSCRIPTIONS)
def list_subscriptions() -> Any:
    """Subscriptions, oldest first (or ?sort=), filtered by contact, list, status, source."""
    args = parse_args(subscription_query)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), SUBSCRIPTION_SORTS, "created_at")
    statement = select(Subscription)
    for name in ("contact_id", "list_id", "status", "source"):
        if name in args:
            statement = statement.where(getattr(Subscription, name) == args[name])
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, Subscription.id, limit=limit, cursor=cursor
        )
        names = _list_names(session, rows)
        items = [subscription_view(row, names.get(row.list_id)) for row in rows]
    return page_answer(items, next_cursor)


@subscriptions_api.get(f"{SUBSCRIPTIONS}/<uuid:subscription_id>")
def read_subscription(subscription_id: Any) -> Any:
    with current_db().session() as session:
        row = session.get(Subscription, str(subscription_id))
        if row is None:
            raise not_found("Subscription", subscription_id)
        return jsonify(subscription_view(row, _list_names(session, [row]).get(row.list_id)))


def _target_list(session: Session, list_id: str | None) -> SubscriptionList:
    if list_id is None:
        return subscriptions.default_list(session)
    sub_list = session.get(SubscriptionList, list_id)
    if sub_list is None:
        raise invalid({"list_id": ["No list has this id."]})
    return sub_list


def set_subscription(session: Session, data: Mapping[str, Any]) -> tuple[Subscription, bool]:
    """Apply a validated POST: subscribe or unsubscribe; the row and whether it is new."""
    contact = subscriptions.contact_with_address(session, data["contact_id"])
    sub_list = _target_list(session, data["list_id"])
    origin = Origin(
        data["source"],
        ip=str(data["ip"]) if data["ip"] is not None else None,
        user_agent=data["user_agent"],
        actor_id=current_principal().subject,
    )
    if data["status"] == subscriptions.UNSUBSCRIBED:
        assert contact.email_key is not None
        return subscriptions.unsubscribe(session, contact.id, contact.email_key, sub_list, origin)
    return subscriptions.subscribe(
        session, current_settings(), contact, sub_list, origin, double_opt_in=data["double_opt_in"]
    )


@subscriptions_api.post(SUBSCRIPTIONS)
@documented(
    responses={"200": {"description": "The subscription existed: changed or the same"}},
)
def post_subscription() -> Any:
    """Subscribe or unsubscribe a contact (201 for a new row, else 200)."""
    writer()
    data = load_body(subscription_in_in)
    with current_db().session() as session:
        row, new = set_subscription(session, data)
        body = subscription_view(row, _list_names(session, [row]).get(row.list_id))
    if new:
        return created(body, f"/api/v1{SUBSCRIPTIONS}/{body['id']}")
    return jsonify(body)
