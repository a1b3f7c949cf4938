"""Merging duplicates, the subject export and erasure (the right to be forgotten)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from services.contacts.domain import CONTACT_FIELDS, record_contact_event, touch
from services.contacts.models import (
    Company,
    Contact,
    ContactMerge,
    Erasure,
    Interaction,
    Note,
)
from services.contacts.schemas import (
    company_view,
    contact_view,
    note_view,
)
from services.contacts.timeline import entry_view, mark_activity
from shared.events import utcnow
from shared.idempotency import forget_resource
from shared.outbox import record_event, redact_aggregate
from shared.web import invalid

# Who may merge and erase people besides an admin: nobody yet. Both are irreversible and
# reach every service; a privacy officer's role, once there is one, is named here (and in
# the gateway's PRIVACY rule).
PRIVACY_ROLES: tuple[str, ...] = ()


def merge_contacts(session: Session, contact: Contact, duplicate: Contact) -> Contact:
    """Fold a duplicate into a contact: notes, timeline, tags and missing fields move over.

    The duplicate is deleted; `contact.merged` tells other services to repoint their
    records from the duplicate's id to the contact's.
    """
    if contact.id == duplicate.id:
        raise invalid({"duplicate_id": ["A contact cannot be merged into itself."]})
    for model in (Note, Interaction):
        session.execute(
            update(model).where(model.contact_id == duplicate.id).values(contact_id=contact.id)
        )
    session.execute(
        update(ContactMerge)
        .where(ContactMerge.contact_id == duplicate.id)
        .values(contact_id=contact.id)
    )
    for name in CONTACT_FIELDS:
        if name != "email" and not getattr(contact, name) and getattr(duplicate, name):
            setattr(contact, name, getattr(duplicate, name))
    contact.custom_fields = {**(duplicate.custom_fields or {}), **(contact.custom_fields or {})}
    known = {tag.key for tag in contact.tag_list}
    contact.tag_list = contact.tag_list + [t for t in duplicate.tag_list if t.key not in known]
    if duplicate.currency == contact.currency:
        contact.lifetime_value += duplicate.lifetime_value
    if duplicate.last_activity_at is not None:
        mark_activity(contact, duplicate.last_activity_at)
    duplicate_id = duplicate.id
    session.delete(duplicate)
    session.flush()
    session.add(ContactMerge(duplicate_id=duplicate_id, contact_id=contact.id, merged_at=utcnow()))
    touch(contact)
    record_contact_event(session, "contact.merged", contact, duplicate_id=duplicate_id)
    return contact


def resolve_merged(session: Session, contact_id: str) -> str:
    """The id a contact lives under now (itself, or the contact it was merged into)."""
    merge = session.get(ContactMerge, str(contact_id))
    return merge.contact_id if merge else str(contact_id)


def subject_export(
    session: Session, contact: Contact, scoped_owner: str | None = None
) -> dict[str, Any]:
    """Everything this service holds about one person (as `timeline.entry_view` shows a
    caller limited to `scoped_owner`'s records the timeline entries of other reps' ones)."""
    company = session.get(Company, contact.company_id) if contact.company_id else None
    notes = session.scalars(
        select(Note).where(Note.contact_id == contact.id).order_by(Note.created_at)
    )
    entries = session.scalars(
        select(Interaction)
        .where(Interaction.contact_id == contact.id)
        .order_by(Interaction.occurred_at)
    )
    merged = session.scalars(
        select(ContactMerge.duplicate_id).where(ContactMerge.contact_id == contact.id)
    )
    return {
        "service": "contacts",
        "exported_at": utcnow(),
        "contact": contact_view(contact),
        "company": company_view(company) if company else None,
        "notes": [note_view(note) for note in notes],
        "interactions": [entry_view(entry, scoped_owner) for entry in entries],
        "merged_ids": list(merged),
    }


def erase_contact(session: Session, contact: Contact) -> None:
    """Forget a person: their rows, copies of their data in the outbox and stored answers.

    Only the id survives, in a tombstone, so late events cannot bring the person back.
    `contact.erased` (carrying the id alone) tells every other service to do the same.
    """
    contact_id = contact.id
    merged_ids = list(
        session.scalars(
            select(ContactMerge.duplicate_id).where(ContactMerge.contact_id == contact_id)
        )
    )
    resource_ids = [contact_id, *merged_ids]
    resource_ids += session.scalars(select(Note.id).where(Note.contact_id == contact_id))
    resource_ids += session.scalars(
        select(Interaction.id).where(Interaction.contact_id == contact_id)
    )
    for aggregate_id in (contact_id, *merged_ids):
        redact_aggregate(session, aggregate_id, keep={"id": aggregate_id})
    for resource_id in resource_ids:
        forget_resource(session, resource_id)
    session.delete(contact)
    session.flush()
    for erased_id in (contact_id, *merged_ids):
        if session.get(Erasure, erased_id) is None:
            session.add(Erasure(contact_id=erased_id, erased_at=utcnow()))
    record_event(
        session, "contact.erased", contact_id, {"id": contact_id, "merged_ids": merged_ids}
    )


def is_erased(session: Session, contact_id: str) -> bool:
    return session.get(Erasure, str(contact_id)) is not None


def compact_storage(session: Session) -> None:
    """Push erased bytes out of SQLite's write-ahead log (secure_delete zeroes the pages)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))


def record_alias(session: Session, alias_id: str, contact: Contact) -> None:
    """Let an id another service named stand for an existing contact (`contact.merged`)."""
    if session.get(ContactMerge, alias_id) is None:
        session.add(ContactMerge(duplicate_id=alias_id, contact_id=contact.id, merged_at=utcnow()))
        touch(contact)
        record_contact_event(session, "contact.merged", contact, duplicate_id=alias_id)
