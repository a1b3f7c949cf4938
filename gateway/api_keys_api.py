"""`/api/v1/api-keys` (admin only) and the check of `X-API-Key` on every other route."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import api_keys
from gateway.api import PAGING_PARAMS, signed_in_user
from gateway.models import ApiKey, User
from gateway.schemas import ApiKeyCreateSchema, ApiKeyListQuerySchema, ApiKeySchema
from shared.auth import Principal, current_principal, forbidden, unauthorized
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.web import created, current_db, load_body, load_or_422, no_content

api_keys_api = Blueprint("gateway_api_keys", __name__, url_prefix="/api/v1/api-keys")

API_KEY_SORTS = {
    "created_at": SortKey("created_at", ApiKey.created_at),
    "name": SortKey("name", ApiKey.name),
}

_api_key_schema = ApiKeySchema()


def show(record: ApiKey) -> dict[str, Any]:
    return _api_key_schema.dump(record)


def api_key_principal(presented: str) -> Principal:
    """The principal of an `X-API-Key`, else 401 (shared.auth.protect calls this)."""
    with current_db().session() as session:
        record = api_keys.find_usable_key(session, presented)
        if record is None:
            raise unauthorized("The API key is not valid or has been revoked")
        api_keys.note_use(session, record)
        return api_keys.principal_of(record)


def require_key_admin(session: Session) -> User:
    """The caller, if a signed-in admin: keys are not made or seen with a key."""
    if current_principal().kind != "user":
        raise forbidden("API keys are managed by a signed-in admin, not with an API key")
    user = signed_in_user(session)
    if user.role != "admin":
        raise forbidden("Only an admin may manage API keys")
    return user


api_key_create_in = ApiKeyCreateSchema()


@api_keys_api.post("")
def create_api_key() -> Response:
    """Make a key (201): the answer holds the key itself, shown this once only."""
    with current_db().session() as session:
        admin = require_key_admin(session)
        fields = load_body(api_key_create_in)
        new = api_keys.create_api_key(session, fields, admin.id)
    response = created(
        {**show(new.record), "key": new.key}, url_for(".get_api_key", key_id=new.record.id)
    )
    response.headers["Cache-Control"] = "no-store"
    return response


api_key_list_query_in = ApiKeyListQuerySchema()


@api_keys_api.get("")
def list_api_keys() -> Response:
    """One page of the keys not revoked, optionally of one role."""
    filters = {k: v for k, v in request.args.items() if k not in PAGING_PARAMS}
    filters = load_or_422(api_key_list_query_in, filters)
    sort = parse_sort(request.args.get("sort"), API_KEY_SORTS, "created_at")
    limit, cursor = list_params()
    statement = select(ApiKey).where(ApiKey.revoked_at.is_(None))
    if "role" in filters:
        statement = statement.where(ApiKey.role == filters["role"])
    with current_db().session() as session:
        require_key_admin(session)
        records, next_cursor = paginate(
            session, statement, sort, ApiKey.id, limit=limit, cursor=cursor
        )
        return jsonify(page_answer([show(record) for record in records], next_cursor))


@api_keys_api.get("/<key_id>")
def get_api_key(key_id: str) -> Response:
    with current_db().session() as session:
        require_key_admin(session)
        return jsonify(show(api_keys.get_api_key(session, key_id)))


@api_keys_api.delete("/<key_id>")
def revoke_api_key(key_id: str) -> Response:
    """Revoke a key (204): calls with it answer 401 from now on."""
    with current_db().session() as session:
        require_key_admin(session)
        api_keys.revoke_api_key(session, key_id)
    return no_content()
