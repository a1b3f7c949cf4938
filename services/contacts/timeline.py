"""A person's timeline: notes, logged calls/emails/meetings and other services' events."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.orm import Session

from services.contacts.domain import record_contact_event, touch
from services.contacts.models import Contact, Interaction, Note, new_id
from services.contacts.schemas import interaction_view, note_view
from shared.events import Envelope, utcnow
from shared.outbox import record_event
from shared.web import not_found

# Events of other services that become timeline entries: type -> (subject, source).
TIMELINE_EVENTS: dict[str, str] = {
    "lead.converted": "Lead converted",
    "deal.created": "Deal created",
    "deal.stage_changed": "Deal moved to another stage",
    "deal.won": "Deal won",
    "deal.lost": "Deal lost",
    "task.completed": "Task completed",
    "ticket.created": "Ticket opened",
    "ticket.resolved": "Ticket resolved",
    "ticket.sla_breached": "Ticket SLA breached",
    "ticket.csat_recorded": "Satisfaction rating received",
    "email.sent": "Email sent",
    "email.opened": "Email opened",
    "email.clicked": "Email link clicked",
    "email.bounced": "Email bounced",
    "subscription.changed": "Subscription changed",
}


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)  # SQLite gives naive datetimes back
    return moment


def mark_activity(contact: Contact, moment: datetime) -> bool:
    """Move the contact's last activity forward (never back); True if it moved."""
    current = _aware(contact.last_activity_at)
    if current is None or moment > current:
        contact.last_activity_at = moment
        return True
    return False


def add_note(session: Session, contact: Contact, body: str, author_id: str | None) -> Note:
    note = Note(id=new_id(), contact_id=contact.id, body=body, author_id=author_id)
    note.created_at = note.updated_at = utcnow()
    session.add(note)
    session.flush()
    record_event(session, "note.created", contact.id, note_view(note))
    return note


def get_note(session: Session, contact: Contact, note_id: str) -> Note:
    note = session.get(Note, str(note_id))
    if note is None or note.contact_id != contact.id:
        raise not_found("Note", note_id)
    return note


def update_note(session: Session, note: Note, body: str) -> Note:
    note.body = body
    note.updated_at = utcnow()
    session.flush()
    record_event(session, "note.updated", note.contact_id, note_view(note))
    return note


def delete_note(session: Session, note: Note) -> None:
    record_event(session, "note.deleted", note.contact_id, {"id": note.id})
    session.delete(note)


def log_interaction(
    session: Session, contact: Contact, data: Mapping[str, Any], actor_id: str | None
) -> Interaction:
    """Log a call, email, meeting or note on the timeline; it counts as activity."""
    entry = Interaction(id=new_id(), contact_id=contact.id, source="contacts", data={})
    for name in ("kind", "direction", "subject", "body", "duration_seconds"):
        setattr(entry, name, data.get(name))
    entry.occurred_at = data.get("occurred_at") or utcnow()
    entry.created_by = actor_id
    entry.created_at = utcnow()
    session.add(entry)
    session.flush()
    record_event(session, "interaction.logged", contact.id, interaction_view(entry))
    if mark_activity(contact, entry.occurred_at):
        touch(contact)
        record_contact_event(session, "contact.updated", contact, changed=["last_activity_at"])
    return entry


def _amount(data: Mapping[str, Any]) -> Decimal | None:
    raw = data.get("amount")
    if isinstance(raw, Mapping):
        raw = raw.get("amount")
    try:
        return Decimal(str(raw)).quantize(Decimal("0.01")) if raw is not None else None
    except InvalidOperation:
        return None


def entry_from_event(session: Session, contact: Contact, event: Envelope) -> Interaction:
    """Put another service's event on the person's timeline."""
    data = event.data
    subject = data.get("subject") or data.get("name") or TIMELINE_EVENTS.get(event.type, event.type)
    entry = Interaction(
        id=new_id(),
        contact_id=contact.id,
        kind="event",
        subject=str(subject)[:300],
        occurred_at=event.occurred_at,
        source=event.source[:32],
        event_type=event.type,
        data={key: value for key, value in data.items() if key in _KEPT_EVENT_FIELDS},
        created_at=utcnow(),
    )
    session.add(entry)
    return entry


_KEPT_EVENT_FIELDS = frozenset(
    {
        "owner_id",  # whose lead, deal or task: another sales rep's is shown redacted
        "deal_id",
        "lead_id",
        "ticket_id",
        "task_id",
        "message_id",
        "campaign_id",
        "amount",
        "currency",
        "stage_id",
        "status",
        "priority",
        "rating",
        "url",
        "lost_reason",
    }
)


def entry_view(entry: Interaction, scoped_owner: str | None) -> dict[str, Any]:
    """An entry as the caller sees it: a sales rep limited to their own records
    (shared.owner_scope) sees another's lead, deal or task named by its kind alone."""
    view = interaction_view(entry)
    if scoped_owner is None or entry.source != "sales":
        return view
    if (entry.data or {}).get("owner_id") == scoped_owner:
        return view
    view["subject"] = TIMELINE_EVENTS.get(entry.event_type or "", entry.event_type)
    view["data"] = {}
    return view


def apply_deal_won(contact: Contact, event: Envelope) -> list[str]:
    """A won deal makes the person a customer and adds its amount to lifetime value."""
    changed = []
    amount = _amount(event.data)
    currency = event.data.get("currency") or (
        event.data["amount"].get("currency")
        if isinstance(event.data.get("amount"), Mapping)
        else None
    )
    if amount is not None and (currency is None or currency == contact.currency):
        contact.lifetime_value = (contact.lifetime_value or Decimal("0")) + amount
        changed.append("lifetime_value")
    if contact.lifecycle_stage != "customer":
        contact.lifecycle_stage = "customer"
        changed.append("lifecycle_stage")
    return changed
