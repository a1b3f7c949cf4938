"""Lifecycle stage history: each contact's stage by version and when it happened.

The replica holds a contact's stage now; churn reports need it at any moment. From the
contacts service's events (each its own version of the contact):
- `contact.created` / `contact.updated`: one row (contact id, aggregate_version, stage,
  occurred_at) when the data carries `lifecycle_stage`; an event without it changed
  something else, and the older version's stage still holds.
- `contact.merged`: the survivor's row as above; the duplicate ends (below) at the
  merge's `occurred_at`: from then on it is part of the survivor, not a customer of its own.
- `contact.erased`: the contact and the duplicates merged into it end at the erasure.
  Their earlier rows stay, so reports on periods before the erasure do not change: the
  history holds ids, stages and times only, nothing that names the person.
An end is a row with stage None at END_VERSION, above every real version, so the contact
has no stage from then on (a late event with an older `occurred_at` still fills in the past).

Every row is keyed by (contact id, version) and written once: a redelivered event, or a
version arriving after a newer one, adds its row or nothing, and the stage at time t is
always the stage of the newest version that occurred by t (`stage_at`). Events the source
redacted (an erased person's) are skipped; a malformed one is a PermanentError.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session

from services.marketing.contact_data import (
    contact_values,
    event_version,
    merged_pair,
    uuid_value,
)
from services.marketing.models import ContactStage
from shared.bus import Handler, PermanentError
from shared.config import Settings
from shared.contact_events import erased_contact_ids
from shared.events import Envelope

END_VERSION = 2**31 - 1  # an ended contact: newer than any version it will ever have


def record_stage(
    session: Session, contact_id: str, version: int, stage: str | None, when: datetime
) -> bool:
    """Keep the stage of one version of a contact, unless known already; True if new."""
    if session.get(ContactStage, (contact_id, version)) is not None:
        return False
    row = ContactStage(contact_id=contact_id, version=version, stage=stage, occurred_at=when)
    session.add(row)
    session.flush()
    return True


def _record_version(session: Session, event: Envelope) -> None:
    """The stage the event's contact has at the event's version (if the data says)."""
    data = event.data
    contact_id = uuid_value(data.get("id", event.aggregate_id), "id")
    version = event_version(event)
    values = contact_values({"lifecycle_stage": data["lifecycle_stage"]})
    if version >= END_VERSION:
        raise PermanentError(f"{event.type} aggregate_version is out of range")
    record_stage(session, contact_id, version, values["lifecycle_stage"], event.occurred_at)


def on_contact_changed(session: Session, event: Envelope) -> None:
    """contact.created / contact.updated: the stage at this version."""
    if event.data.get("redacted") or "lifecycle_stage" not in event.data:
        return
    _record_version(session, event)


def on_contact_merged(session: Session, event: Envelope) -> None:
    """contact.merged: the survivor's stage now; the duplicate ends."""
    pair = merged_pair(event)
    if pair is None:
        return
    duplicate_id = pair[1]
    if "lifecycle_stage" in event.data:
        _record_version(session, event)
    record_stage(session, duplicate_id, END_VERSION, None, event.occurred_at)


def on_contact_erased(session: Session, event: Envelope) -> None:
    """contact.erased: the contact and its merged duplicates end (their past stays)."""
    for contact_id in erased_contact_ids(event):
        record_stage(session, contact_id, END_VERSION, None, event.occurred_at)


# --- reading --------------------------------------------------------------------------------


def stage_at(moment: datetime) -> Select[Any]:
    """SQL rows (contact_id, stage): every contact's stage at `moment` (None: ended)."""
    newest = (
        select(ContactStage.contact_id, func.max(ContactStage.version).label("version"))
        .where(ContactStage.occurred_at <= moment)
        .group_by(ContactStage.contact_id)
        .subquery()
    )
    return select(ContactStage.contact_id, ContactStage.stage).join(
        newest,
        and_(
            ContactStage.contact_id == newest.c.contact_id,
            ContactStage.version == newest.c.version,
        ),
    )


def contact_stage_at(session: Session, contact_id: str, moment: datetime) -> str | None:
    """One contact's stage at `moment` (None: unknown then, or ended)."""
    return session.scalar(
        select(ContactStage.stage)
        .where(ContactStage.contact_id == contact_id, ContactStage.occurred_at <= moment)
        .order_by(ContactStage.version.desc())
        .limit(1)
    )


def handlers(settings: Settings) -> dict[str, Handler]:
    """The contact events that make the stage history."""
    return {
        "contact.created": on_contact_changed,
        "contact.updated": on_contact_changed,
        "contact.merged": on_contact_merged,
        "contact.erased": on_contact_erased,
    }
