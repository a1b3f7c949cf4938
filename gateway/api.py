"""The gateway's own HTTP API: users (admin only) and the caller (`/me`).

Signing in and tokens are in gateway.auth_api, API keys in gateway.api_keys_api.
"""

from __future__ import annotations

from typing import Any

from argon2 import PasswordHasher
from flask import Blueprint, Response, current_app, jsonify, request, url_for
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway import api_keys, domain
from gateway.models import User
from gateway.schemas import (
    ApiKeySchema,
    UserCreateSchema,
    UserListQuerySchema,
    UserSchema,
    UserUpdateSchema,
)
from shared.auth import Principal, current_principal, forbidden, unauthorized
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.web import created, current_db, load_body, load_or_422, no_content

api = Blueprint("gateway_api", __name__, url_prefix="/api/v1")

USER_SORTS = {
    "created_at": SortKey("created_at", User.created_at),
    "email": SortKey("email", User.email_key, attribute="email_key"),
    "name": SortKey("name", User.name),
}
PAGING_PARAMS = ("limit", "cursor", "sort")

_user_schema = UserSchema()


def password_hasher() -> PasswordHasher:
    return current_app.extensions["gateway.hasher"]


def show(user: User) -> dict[str, Any]:
    return _user_schema.dump(user)


def signed_in_user(session: Session) -> User:
    """The caller's user record: it must still exist and be active (tokens outlive changes)."""
    principal: Principal = current_principal()
    user = session.get(User, principal.subject) if principal.kind == "user" else None
    if user is None or not user.active:
        raise unauthorized("The account of this access token is no longer active")
    return user


def require_admin(session: Session) -> User:
    """The caller, if they are an admin now (not just when the token was issued); else 403."""
    user = signed_in_user(session)
    if user.role != "admin":
        raise forbidden("Only an admin may manage users")
    return user


@api.get("/me")
def me() -> Response:
    """Who the caller is: their user record, or the API key they call with."""
    principal = current_principal()
    with current_db().session() as session:
        if principal.kind == "api_key":
            key = api_keys.get_api_key(session, principal.subject)
            return jsonify({**ApiKeySchema().dump(key), "kind": "api_key"})
        return jsonify(show(signed_in_user(session)))


user_list_query_in = UserListQuerySchema()


@api.get("/users")
def list_users() -> Response:
    """One page of users, filtered by role, active and `q` (email or name)."""
    filters = {k: v for k, v in request.args.items() if k not in PAGING_PARAMS}
    filters = load_or_422(user_list_query_in, filters)
    sort = parse_sort(request.args.get("sort"), USER_SORTS, "created_at")
    limit, cursor = list_params()
    statement = select(User)
    if "role" in filters:
        statement = statement.where(User.role == filters["role"])
    if "active" in filters:
        statement = statement.where(User.active.is_(filters["active"]))
    if filters.get("q"):
        text = filters["q"].lower()
        statement = statement.where(
            or_(
                User.email_key.contains(text, autoescape=True),
                func.lower(User.name).contains(text, autoescape=True),
            )
        )
    with current_db().session() as session:
        require_admin(session)
        users, next_cursor = paginate(session, statement, sort, User.id, limit=limit, cursor=cursor)
        return jsonify(page_answer([show(user) for user in users], next_cursor))


user_create_in = UserCreateSchema()


@api.post("/users")
def create_user() -> Response:
    """Add a user (201 with a Location)."""
    fields: dict[str, Any] = {}
    try:
        with current_db().session() as session:
            require_admin(session)
            fields = load_body(user_create_in)
            user = domain.create_user(session, password_hasher(), fields)
    except IntegrityError:  # the same email, added by a concurrent request
        raise domain.duplicate_email(fields.get("email", "")) from None
    return created(show(user), url_for(".get_user", user_id=user.id))


@api.get("/users/<user_id>")
def get_user(user_id: str) -> Response:
    with current_db().session() as session:
        require_admin(session)
        return jsonify(show(domain.get_user(session, user_id)))


user_update_in = UserUpdateSchema()


@api.patch("/users/<user_id>")
def update_user(user_id: str) -> Response:
    """Change a user's name, role, active flag or password."""
    with current_db().session() as session:
        require_admin(session)
        changes = load_body(user_update_in, partial=True)
        user = domain.update_user(session, password_hasher(), user_id, changes)
        return jsonify(show(user))


@api.delete("/users/<user_id>")
def delete_user(user_id: str) -> Response:
    with current_db().session() as session:
        require_admin(session)
        domain.delete_user(session, user_id)
    return no_content()
