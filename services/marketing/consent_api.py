"""The suppression list and the consent ledger over HTTP (registered in subscriptions_api).

- `/api/v1/suppressions` {email (null once erased), reason, source, created_at,
  updated_at}: list (?email=, ?reason=, newest first), `GET /suppressions/{email}`,
  POST {email, reason: manual|complained (default manual)}: 201 when new, 200 when the
  address was suppressed already (the stronger reason stays), and
  `DELETE /suppressions/{email}` (204): a manual one by the role marketing or admin,
  any other only by an admin with `?force=true` (409 without it, 403 for others).
- `/api/v1/subscriptions/ledger`: the consent ledger, newest first (?contact_id=,
  ?list_id=, ?email=, ?action=, ?source=). Read only: nobody edits consent history.

Writes need the role marketing (or admin); every role reads.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from marshmallow import fields, validate
from sqlalchemy import select

from services.marketing import suppressions
from services.marketing.ledger import Origin, record_view
from services.marketing.models import ConsentRecord, Suppression
from shared.auth import current_principal, require_role
from shared.openapi import GENERIC_JSON, documented
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.schemas import StrictSchema
from shared.web import created, current_db, load_body, no_content, not_found, parse_args

consent_api = Blueprint("consent", __name__)

SUPPRESSIONS = "/suppressions"
RECORDS = "/subscriptions/ledger"
SUPPRESSION_SORTS = {
    "created_at": SortKey("created_at", Suppression.created_at),
    "updated_at": SortKey("updated_at", Suppression.updated_at),
}
RECORD_SORTS = {"occurred_at": SortKey("occurred_at", ConsentRecord.occurred_at)}
ACTIONS = ("subscribed", "unsubscribed", "pending", "suppressed", "suppression_lifted")
EMAIL = validate.Length(max=254)


class SuppressionInSchema(StrictSchema):
    """An address an operator suppresses by hand."""

    email = fields.Email(required=True, validate=EMAIL)
    reason = fields.String(
        load_default=suppressions.MANUAL,
        validate=validate.OneOf((suppressions.MANUAL, suppressions.COMPLAINED)),
    )


suppression_in_in = SuppressionInSchema()


class SuppressionArgsSchema(StrictSchema):
    email = fields.Email(validate=EMAIL)
    reason = fields.String(validate=validate.OneOf(suppressions.REASONS))
    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


suppression_query = SuppressionArgsSchema()


class LiftArgsSchema(StrictSchema):
    force = fields.Boolean(load_default=False)


lift_query = LiftArgsSchema()


class RecordArgsSchema(StrictSchema):
    contact_id = fields.UUID()
    list_id = fields.UUID()
    email = fields.Email(validate=EMAIL)
    action = fields.String(validate=validate.OneOf(ACTIONS))
    source = fields.String(validate=validate.Length(max=30))
    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


record_query = RecordArgsSchema()


def _origin() -> Origin:
    return Origin("api", actor_id=current_principal().subject)


@consent_api.get(SUPPRESSIONS)
def list_suppressions() -> Any:
    """Suppressions, newest first (or ?sort=), filtered by ?email= and ?reason=, paged."""
    args = parse_args(suppression_query)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), SUPPRESSION_SORTS, "-created_at")
    statement = select(Suppression)
    if "email" in args:
        statement = statement.where(
            Suppression.email_hash == suppressions.email_hash(args["email"])
        )
    if "reason" in args:
        statement = statement.where(Suppression.reason == args["reason"])
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, Suppression.email_hash, limit=limit, cursor=cursor
        )
        return page_answer([suppressions.suppression_view(row) for row in rows], next_cursor)


@consent_api.get(f"{SUPPRESSIONS}/<path:email>")
def read_suppression(email: str) -> Any:
    """One address's suppression; 404 when it is not suppressed."""
    with current_db().session() as session:
        row = suppressions.suppression_of(session, email)
        if row is None:
            raise not_found("Suppression", email)
        return jsonify(suppressions.suppression_view(row))


@consent_api.post(SUPPRESSIONS)
@documented(responses={"200": {"description": "Suppressed already", "content": GENERIC_JSON}})
def add_suppression() -> Any:
    """Suppress an address by hand (201; 200 when it was suppressed already)."""
    require_role("marketing")
    data = load_body(suppression_in_in)
    with current_db().session() as session:
        new = suppressions.suppression_of(session, data["email"], lock=True) is None
        suppressions.suppress(session, data["email"], data["reason"], _origin())
        row = suppressions.suppression_of(session, data["email"])
        assert row is not None
        body = suppressions.suppression_view(row)
    if new:
        return created(body, f"/api/v1{SUPPRESSIONS}/{suppressions.email_key(data['email'])}")
    return jsonify(body)


@consent_api.delete(f"{SUPPRESSIONS}/<path:email>")
def lift_suppression(email: str) -> Any:
    """Lift a suppression (204): manual freely, others by an admin with ?force=true."""
    require_role("marketing")
    force = parse_args(lift_query)["force"]
    if force:
        require_role()  # forcing is for admins only
    with current_db().session() as session:
        suppressions.lift(session, email, _origin(), force=force)
    return no_content()


@consent_api.get(RECORDS)
def list_records() -> Any:
    """The consent ledger, newest first, filtered by contact, list, address, action, source."""
    args = parse_args(record_query)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), RECORD_SORTS, "-occurred_at")
    statement = select(ConsentRecord)
    if "email" in args:
        statement = statement.where(ConsentRecord.email == suppressions.email_key(args["email"]))
    for name in ("contact_id", "list_id", "action", "source"):
        if name in args:
            statement = statement.where(getattr(ConsentRecord, name) == args[name])
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, ConsentRecord.id, limit=limit, cursor=cursor
        )
        return page_answer([record_view(row) for row in rows], next_cursor)
