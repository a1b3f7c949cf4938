"""Events the contacts service reacts to: conversions, wins and other services' timeline."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from services.contacts import domain, privacy, timeline
from services.contacts.models import Contact
from services.contacts.schemas import ContactInSchema
from shared.bus import PermanentError
from shared.events import Envelope
from shared.web import ApiError

log = logging.getLogger(__name__)

Handler = Callable[[Session, Envelope], None]


def _contact_of(session: Session, event: Envelope) -> Contact | None:
    """The contact an event is about (following merges); None if it names none, or an
    unknown or erased one.

    A deal or task without a contact, or mail to a staff address, is no fault of the
    event: there is simply nothing on a customer's timeline to change.
    """
    contact_id = event.data.get("contact_id")
    if contact_id is None:
        log.debug("%s %s names no contact; nothing to do", event.type, event.id)
        return None
    if not isinstance(contact_id, str) or not contact_id:
        raise PermanentError(f"{event.type} has a contact_id that is not an id: {contact_id!r}")
    contact_id = privacy.resolve_merged(session, contact_id)
    if privacy.is_erased(session, contact_id):
        return None
    return session.get(Contact, contact_id)


def _named_contact(
    session: Session, proposed_id: str, fields: dict[str, Any], stage: str
) -> Contact | None:
    """The contact another service named: made under its id, or the one with that email.

    Linking to an existing email records an alias and publishes `contact.merged` from the
    named id to the existing contact, so the other service repoints what it made.
    """
    if privacy.is_erased(session, proposed_id):
        return None
    existing = session.get(Contact, proposed_id) or (
        domain.find_by_email(session, fields["email"]) if fields.get("email") else None
    )
    if existing is None:
        try:
            values = ContactInSchema().load({"id": proposed_id, **fields, "lifecycle_stage": stage})
            return domain.create_contact(session, values)
        except Exception as error:  # the other service's data does not make a valid contact
            raise PermanentError(f"no valid contact from the event: {error}") from error
    if existing.id != proposed_id:
        privacy.record_alias(session, proposed_id, existing)
    return existing


def on_lead_converted(session: Session, event: Envelope) -> None:
    """Create the converted lead's contact under the id sales named, or link the same email."""
    data = event.data
    proposed_id = data.get("contact_id")
    if not isinstance(proposed_id, str):
        return
    fields = {
        k: data[k]
        for k in ("first_name", "last_name", "email", "phone", "title", "owner_id")
        if data.get(k)
    }
    contact = _named_contact(session, proposed_id, fields, "opportunity")
    if contact is None:
        return
    if contact.lifecycle_stage in ("subscriber", "lead"):
        domain.update_contact(session, contact, {"lifecycle_stage": "opportunity"})
    _add_to_timeline(session, contact, event)


def on_ticket_created(session: Session, event: Envelope) -> None:
    """A ticket on the timeline; from an unknown address it makes (or links) the contact."""
    requester = event.data.get("requester")
    contact_id = event.data.get("contact_id")
    if isinstance(requester, dict) and isinstance(contact_id, str) and requester.get("email"):
        first, _, last = str(requester.get("name") or "").strip().partition(" ")
        fields = {"email": requester["email"], "first_name": first[:100], "last_name": last[:100]}
        contact = _named_contact(session, contact_id, fields, "lead")
        if contact is not None:
            _add_to_timeline(session, contact, event)
        return
    on_timeline_event(session, event)


def on_deal_won(session: Session, event: Envelope) -> None:
    contact = _contact_of(session, event)
    if contact is None:
        return
    changed = timeline.apply_deal_won(contact, event)
    _add_to_timeline(session, contact, event, changed)


def on_timeline_event(session: Session, event: Envelope) -> None:
    contact = _contact_of(session, event)
    if contact is not None:
        _add_to_timeline(session, contact, event)


def on_tag_requested(session: Session, event: Envelope) -> None:
    if event.data.get("contact_id") is None:  # a request to tag nobody is malformed
        raise PermanentError("contact.tag_requested carries no contact_id")
    contact = _contact_of(session, event)
    tags = event.data.get("tags")
    if contact is None:
        return
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise PermanentError("contact.tag_requested needs a list of tag names")
    try:
        domain.add_tags(session, contact, tags)
    except ApiError as error:
        raise PermanentError(f"tags refused: {error.detail or error.title}") from error


def _add_to_timeline(
    session: Session, contact: Contact, event: Envelope, changed: list[str] | None = None
) -> None:
    timeline.entry_from_event(session, contact, event)
    changed = list(changed or [])
    if timeline.mark_activity(contact, event.occurred_at):
        changed.append("last_activity_at")
    if changed:
        domain.touch(contact)
        domain.record_contact_event(session, "contact.updated", contact, changed=changed)


def handlers() -> dict[str, Handler]:
    """Every event type this service consumes, with its handler."""
    table: dict[str, Handler] = {
        event_type: on_timeline_event for event_type in timeline.TIMELINE_EVENTS
    }
    table["lead.converted"] = on_lead_converted
    table["ticket.created"] = on_ticket_created
    table["deal.won"] = on_deal_won
    table["contact.tag_requested"] = on_tag_requested
    return table
