"""Events the support service reacts to: erasures and merges of contacts."""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.support import privacy
from shared.bus import Handler, PermanentError
from shared.contact_events import contact_id_of, erased_contact_ids
from shared.events import Envelope


def on_contact_erased(session: Session, event: Envelope) -> None:
    """Right to be forgotten: anonymise the tickets of the person and of their merged records.

    `data.id` names the person (the aggregate id when absent); `data.merged_ids` the
    contacts merged into them earlier, whose tickets are theirs too.
    """
    privacy.erase_contact(session, erased_contact_ids(event))


def on_contact_merged(session: Session, event: Envelope) -> None:
    """A duplicate folded into a contact: its tickets follow (unless the survivor is erased)."""
    if "id" not in event.data or "duplicate_id" not in event.data:
        raise PermanentError("contact.merged needs id and duplicate_id")
    contact_id = contact_id_of(event.data["id"], "id")
    duplicate_id = contact_id_of(event.data["duplicate_id"], "duplicate_id")
    if contact_id == duplicate_id or privacy.is_erased(session, contact_id):
        return
    privacy.repoint_contact(session, duplicate_id, contact_id)


def handlers() -> dict[str, Handler]:
    """Every event type this service consumes, with its handler."""
    return {
        "contact.erased": on_contact_erased,
        "contact.merged": on_contact_merged,
    }
