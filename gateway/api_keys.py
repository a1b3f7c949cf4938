"""API keys: made by an admin, shown once, kept as a hash, checked only by the gateway.

A key reads `crm_<prefix>_<secret>`: the prefix is public and finds the key's row, the
secret (32 random bytes) is stored as its SHA-256 and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from gateway.models import ApiKey
from shared.auth import Principal
from shared.events import utcnow
from shared.web import not_found

KEY_SCHEME = "crm"
PREFIX_BYTES = 6  # 12 hex characters
SECRET_BYTES = 32
# last_used_at is this coarse, so a busy key is not a database write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Compared against when no key has the prefix, so a miss costs what a wrong secret does.
_NO_SUCH_KEY = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class NewApiKey:
    """A key just made: its record and the key itself, which is never shown again."""

    record: ApiKey
    key: str


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(session: Session, fields: dict[str, Any], created_by: str | None) -> NewApiKey:
    """A new key with a name and a role, made by the user `created_by`."""
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    record = ApiKey(
        id=str(uuid.uuid4()),
        name=fields["name"],
        role=fields["role"],
        prefix=prefix,
        secret_hash=secret_digest(secret),
        created_by=created_by,
        created_at=utcnow(),
    )
    session.add(record)
    session.flush()
    return NewApiKey(record, f"{KEY_SCHEME}_{prefix}_{secret}")


def _split_key(presented: str) -> tuple[str, str] | None:
    scheme, _, rest = presented.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != KEY_SCHEME or len(prefix) != 2 * PREFIX_BYTES or not secret:
        return None
    return prefix, secret


def find_usable_key(session: Session, presented: str) -> ApiKey | None:
    """The unrevoked key `presented` is, or None."""
    parts = _split_key(presented)
    if parts is None:
        return None
    prefix, secret = parts
    record = session.scalars(
        select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    ).first()
    expected = record.secret_hash if record is not None else _NO_SUCH_KEY
    matches = hmac.compare_digest(expected, secret_digest(secret))
    return record if matches and record is not None else None


def note_use(session: Session, record: ApiKey, now: datetime | None = None) -> None:
    """Set last_used_at, unless it was set within the last minute (by any process)."""
    now = now or utcnow()
    stale = now - LAST_USED_RESOLUTION
    if record.last_used_at is not None and record.last_used_at > stale:
        return
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == record.id)
        .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= stale))
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )


def principal_of(record: ApiKey) -> Principal:
    """Who a call with this key is: the key itself (its id as subject), with its role."""
    return Principal(record.id, record.role, None, kind="api_key")


def get_api_key(session: Session, key_id: str) -> ApiKey:
    """The unrevoked key with this id, else 404."""
    record = session.get(ApiKey, key_id)
    if record is None or record.revoked_at is not None:
        raise not_found("API key", key_id)
    return record


def revoke_api_key(session: Session, key_id: str) -> None:
    """Revoke a key: it answers 401 from now on (its record stays, for the audit trail)."""
    record = get_api_key(session, key_id)
    record.revoked_at = utcnow()
    session.flush()
