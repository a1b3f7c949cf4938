"""Events the support service reacts to: erasures and merges of contacts."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from services.support import privacy
from shared.bus import Handler, PermanentError
from shared.events import Envelope

MAX_MERGED_IDS = 1000


def _contact_id(value: Any, name: str) -> str:
    """A contact id as the contacts service writes it (a UUID), canonical; else permanent."""
    if not isinstance(value, str):
        raise PermanentError(f"{name} must be a contact id (a UUID string)")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise PermanentError(f"{name} must be a contact id (a UUID string)") from None


def on_contact_erased(session: Session, event: Envelope) -> None:
    """Right to be forgotten: anonymise the tickets of the person and of their merged records.

    `data.id` names the person (the aggregate id when absent); `data.merged_ids` the
    contacts merged into them earlier, whose tickets are theirs too.
    """
    contact_id = _contact_id(event.data.get("id", event.aggregate_id), "id")
    merged_ids = event.data.get("merged_ids") or []
    if not isinstance(merged_ids, list) or len(merged_ids) > MAX_MERGED_IDS:
        raise PermanentError("contact.erased merged_ids must be a list of contact ids")
    merged = [_contact_id(merged_id, "merged_ids") for merged_id in merged_ids]
    privacy.erase_contact(session, [contact_id, *merged])


def on_contact_merged(session: Session, event: Envelope) -> None:
    """A duplicate folded into a contact: its tickets follow (unless the survivor is erased)."""
    if "id" not in event.data or "duplicate_id" not in event.data:
        raise PermanentError("contact.merged needs id and duplicate_id")
    contact_id = _contact_id(event.data["id"], "id")
    duplicate_id = _contact_id(event.data["duplicate_id"], "duplicate_id")
    if contact_id == duplicate_id or privacy.is_erased(session, contact_id):
        return
    privacy.repoint_contact(session, duplicate_id, contact_id)


def handlers() -> dict[str, Handler]:
    """Every event type this service consumes, with its handler."""
    return {
        "contact.erased": on_contact_erased,
        "contact.merged": on_contact_merged,
    }
