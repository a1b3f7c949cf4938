"""What other services read alike of the contacts service's events.

`contact.erased` names the person (`data.id`, else the aggregate id) and the contacts
merged into them earlier (`data.merged_ids`): every service that erases reads the same
ids, with the same checks.
"""

from __future__ import annotations

from typing import Any

from shared.bus import PermanentError
from shared.events import Envelope, canonical_uuid

# More merged records than any person has; a longer list is malformed.
MAX_MERGED_IDS = 1000


def contact_id_of(value: Any, name: str) -> str:
    """A contact id (a UUID string), canonical; else the event can never be applied."""
    contact_id = canonical_uuid(value)
    if contact_id is None:
        raise PermanentError(f"{name} must be a contact id (a UUID string)")
    return contact_id


def erased_contact_ids(event: Envelope) -> list[str]:
    """The ids a `contact.erased` event ends, each once: the person's, then the merged ones."""
    data = event.data
    merged = data.get("merged_ids") or []
    if not isinstance(merged, list) or len(merged) > MAX_MERGED_IDS:
        raise PermanentError("contact.erased merged_ids must be a list of contact ids")
    ids = [contact_id_of(data.get("id", event.aggregate_id), "id")]
    ids += [contact_id_of(value, "merged_ids") for value in merged]
    return list(dict.fromkeys(ids))
