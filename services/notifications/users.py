"""Staff addresses: a replica of the gateway's users, to email assignees, owners and reminders.

- `user.created`, `user.updated` (data: id, email, name, active): kept when the event's
  `aggregate_version` is newer than what is held.
- `user.deleted`: the row keeps its id and version but loses its address (a tombstone), so
  an older event arriving late cannot bring the person back.

`staff_address(session, user_id)` is how the notices and reminders find someone: an active
user with a usable address, else None.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from services.notifications.mime import address_problem
from services.notifications.models import UserAddress
from shared.bus import Handler, PermanentError
from shared.config import Settings
from shared.events import Envelope, canonical_uuid, utcnow

log = logging.getLogger(__name__)


def _user_id(value: Any) -> str:
    """A user id (a UUID), canonical; else the event can never be applied."""
    user_id = canonical_uuid(value)
    if user_id is None:
        raise PermanentError("id must be a user id (a UUID string)")
    return user_id


def _version(event: Envelope) -> int:
    version = event.aggregate_version
    if version is None and isinstance(event.data.get("version"), int):
        version = event.data["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PermanentError("a user event needs its aggregate_version (a positive integer)")
    return version


def _newer_row(session: Session, user_id: str, version: int) -> UserAddress | None:
    """The row to change when this version is newer than the one held; else None."""
    row = session.get(UserAddress, user_id, with_for_update=True)
    if row is None:
        row = UserAddress(user_id=user_id, version=0, active=False)
        session.add(row)
    return row if version > row.version else None


def _usable_email(value: Any, user_id: str) -> str | None:
    email = value.strip() if isinstance(value, str) else None
    if not email or address_problem(email) is not None:
        log.warning("user %s has no address mail can go to; none kept", user_id)
        return None
    return email


def on_user_changed(session: Session, event: Envelope) -> None:
    """Keep a user's address, name and active flag, if this event is newer than what is held."""
    data = event.data
    user_id = _user_id(data.get("id", event.aggregate_id))
    row = _newer_row(session, user_id, _version(event))
    if row is None:
        return  # stale or repeated: what is held is as new or newer
    if "email" in data:
        row.email = _usable_email(data["email"], user_id)
    if "name" in data:
        name = data["name"].strip() if isinstance(data["name"], str) else ""
        row.name = name[:200] or None
    if "active" in data:
        row.active = data["active"] is True
    row.version, row.updated_at = _version(event), utcnow()


def on_user_deleted(session: Session, event: Envelope) -> None:
    """Forget a deleted user's address and name; the tombstone keeps its version."""
    user_id = _user_id(event.data.get("id", event.aggregate_id))
    row = _newer_row(session, user_id, _version(event))
    if row is None:
        return
    row.email, row.name, row.active = None, None, False
    row.version, row.updated_at = _version(event), utcnow()


def staff_address(session: Session, user_id: Any) -> dict[str, Any] | None:
    """{id, email, name} of an active user with an address, else None."""
    key = canonical_uuid(user_id)
    if key is None:
        return None
    row = session.get(UserAddress, key)
    if row is None or not row.active or not row.email:
        return None
    return {"id": row.user_id, "email": row.email, "name": row.name}


def handlers(settings: Settings) -> dict[str, Handler]:
    """The gateway's user events that keep the replica."""
    return {
        "user.created": on_user_changed,
        "user.updated": on_user_changed,
        "user.deleted": on_user_deleted,
    }
