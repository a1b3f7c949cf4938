"""Validation of what clients send the gateway, and the shape of what it answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from shared.auth import ROLES
from shared.events import isoformat
from shared.schemas import JsonBoolean

MIN_PASSWORD_LENGTH = 8
# argon2 hashes any length, but hashing megabytes on every sign-in is a cheap denial of service.
MAX_PASSWORD_LENGTH = 1024

_password = validate.Length(min=MIN_PASSWORD_LENGTH, max=MAX_PASSWORD_LENGTH)
_name = validate.Length(max=200)
_role = validate.OneOf(ROLES)
# Where the refresh token travels: in bodies (API clients) or in an HttpOnly cookie (web app).
SESSION_MODES = ("body", "cookie")


class UtcTimestamp(fields.Field):
    """A datetime written as ISO 8601 UTC with a Z."""

    def _serialize(self, value: datetime | None, attr: Any, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else isoformat(value)


class TokenRequestSchema(Schema):
    """`POST /auth/token`: the credentials."""

    class Meta:
        unknown = RAISE

    email = fields.String(required=True, validate=validate.Length(min=1, max=320))
    password = fields.String(
        required=True, validate=validate.Length(min=1, max=MAX_PASSWORD_LENGTH)
    )
    session = fields.String(
        load_default="body",
        validate=validate.OneOf(SESSION_MODES),
        metadata={
            "description": "`body` (default): the refresh token in the answer. `cookie` (the "
            "web app): the refresh token only in an HttpOnly cookie, never in the body."
        },
    )


class UserCreateSchema(Schema):
    """`POST /users`: a new user; the password is write only."""

    class Meta:
        unknown = RAISE

    email = fields.Email(required=True, validate=validate.Length(max=320))
    name = fields.String(load_default="", validate=_name)
    role = fields.String(required=True, validate=_role)
    active = JsonBoolean(load_default=True)
    team_visibility = JsonBoolean(load_default=False)
    password = fields.String(required=True, load_only=True, validate=_password)


class UserUpdateSchema(Schema):
    """`PATCH /users/{id}`: any of name, role, active, team_visibility, password."""

    class Meta:
        unknown = RAISE

    name = fields.String(validate=_name)
    role = fields.String(validate=_role)
    active = JsonBoolean()
    team_visibility = JsonBoolean()
    password = fields.String(load_only=True, validate=_password)


class UserListQuerySchema(Schema):
    """Filters of `GET /users` (paging and sorting are read by shared.pagination)."""

    class Meta:
        unknown = RAISE

    role = fields.String(validate=_role)
    active = fields.Boolean()
    q = fields.String(validate=validate.Length(max=200))


class UserSchema(Schema):
    """A user as the API shows it (never the password or its hash)."""

    id = fields.String()
    email = fields.String()
    name = fields.String()
    role = fields.String()
    active = fields.Boolean()
    team_visibility = fields.Boolean()
    created_at = UtcTimestamp()
    updated_at = UtcTimestamp()


class RefreshRequestSchema(Schema):
    """`POST /auth/refresh` and `POST /auth/logout`: the refresh token, unless in the cookie."""

    class Meta:
        unknown = RAISE

    refresh_token = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Leave out (or send no body) in cookie mode."},
    )


class ApiKeyCreateSchema(Schema):
    """`POST /api-keys`: a name to recognise the key by, and the role it acts with."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    role = fields.String(required=True, validate=_role)


class ApiKeyListQuerySchema(Schema):
    """Filters of `GET /api-keys` (paging and sorting are read by shared.pagination)."""

    class Meta:
        unknown = RAISE

    role = fields.String(validate=_role)


class ApiKeySchema(Schema):
    """An API key as the API shows it: never the key or its hash."""

    id = fields.String()
    name = fields.String()
    role = fields.String()
    prefix = fields.String()
    created_by = fields.String()
    created_at = UtcTimestamp()
    last_used_at = UtcTimestamp()
