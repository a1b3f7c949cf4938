"""The contact replica and engagement facts: what segments filter on.

Contacts, from the contacts service (data: the contact as its API shows it):
- `contact.created` / `contact.updated`: applied only when the event's `aggregate_version` is
  newer than the row's `version` (an unknown contact is created); absent fields keep their
  value, unknown ones are ignored.
- `contact.merged` (data: the survivor as it is now, plus `duplicate_id`): the survivor is
  applied as above; the duplicate becomes a tombstone pointing at it (`merged_into`), its tags
  go, and its static-list memberships and engagement facts move to the survivor.
- `contact.erased` (data: `id`, `merged_ids`): each becomes a tombstone (`erased`): no email,
  name, fields, tags, facts or memberships; consent forgets the person too
  (`consent.forget_contact`, given the address the row held).
A tombstone ignores every later contact event, so a late one cannot bring a person back;
events whose data the source redacted (an erased person's unsent events) are skipped.

Engagement facts: one `ContactFact` per thing it is about, counted into the contact's counter
with a COUNT, so a fact counts once however often and in whatever order its events come:
- `email.opened` / `email.clicked` (notifications; data `message_id`, `contact_id` when
  known): `emails_opened` / `emails_clicked` = the emails opened / clicked at least once.
- `deal.won`, `deal.reopened`, `deal.deleted` (sales; data: the deal, with `contact_id`):
  `deals_won` = the contact's deals whose newest event is `deal.won`.
- `ticket.*` (support; data: the ticket, with `contact_id` and `status`): `tickets_open` =
  tickets whose newest known status is new, open or pending. Support publishes no
  `ticket.closed` (resolved -> closed is a `ticket.status_changed`) and reopens with
  `ticket.reopened`: every ticket event carries the status, so each one is read the same way.
  `tickets_breached` = those of them whose `sla_breached` is true (support never clears it;
  `ticket.sla_breached` carries the ticket's status and version like the others).
- every `deal.*` (open_deals.py): `deals_open` = deals whose newest known status is open.
Facts naming a merged contact count for the survivor; facts about an erased one are dropped.
`last_activity_at` is the contacts service's (it folds these same events into it).

A malformed event (ids that are not UUIDs, fields of the wrong type) raises PermanentError.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from services.marketing import consent
from services.marketing.contact_data import (
    contact_values,
    event_version,
    merged_pair,
    optional_uuid,
    uuid_value,
)
from services.marketing.models import Contact, ContactFact, ContactTag, SegmentMember
from shared.bus import Handler, PermanentError
from shared.config import Settings
from shared.contact_events import erased_contact_ids
from shared.events import Envelope, utcnow

MAX_MERGE_HOPS = 20
OPEN_TICKET_STATUSES = ("new", "open", "pending")
TICKET_STATUSES = (*OPEN_TICKET_STATUSES, "resolved", "closed")
TICKET_EVENTS = (
    "ticket.created",
    "ticket.updated",
    "ticket.assigned",
    "ticket.status_changed",
    "ticket.resolved",
    "ticket.reopened",
    "ticket.closed",
    "ticket.deleted",
    "ticket.sla_breached",
)
# The counter each kind of fact feeds.
COUNTERS = {
    "email_opened": "emails_opened",
    "email_clicked": "emails_clicked",
    "deal_won": "deals_won",
    "ticket_open": "tickets_open",
    "ticket_breached": "tickets_breached",
    "deal_open": "deals_open",  # kept by open_deals.py
}


# --- the contact replica --------------------------------------------------------------------


def _locked(session: Session, contact_id: str) -> Contact | None:
    """The replica row, freshly read and locked until the transaction ends."""
    return session.get(Contact, contact_id, with_for_update=True, populate_existing=True)


def _new_row(session: Session, contact_id: str) -> Contact:
    row = Contact(id=contact_id, version=0, custom_fields={}, lifetime_value=Decimal("0.00"))
    row.emails_opened = row.emails_clicked = row.deals_won = row.tickets_open = 0
    row.erased = False
    session.add(row)
    session.flush()
    return row


def is_tombstone(row: Contact) -> bool:
    """Erased, or merged into another contact: no event brings it back."""
    return bool(row.erased or row.merged_into)


def apply_contact(session: Session, contact_id: str, version: int, data: Mapping[str, Any]) -> bool:
    """Apply a contact's data if `version` is newer than the replica's; True if applied."""
    values = contact_values(data)
    row = _locked(session, contact_id)
    if row is not None and (is_tombstone(row) or version <= row.version):
        return False  # stale, repeated, or about someone gone
    row = row or _new_row(session, contact_id)
    tags = values.pop("tags", None)
    for name, value in values.items():
        setattr(row, name, value)
    row.version, row.updated_at = version, utcnow()
    if tags is not None:
        session.execute(delete(ContactTag).where(ContactTag.contact_id == contact_id))
        if tags:
            session.execute(
                insert(ContactTag), [{"contact_id": contact_id, "tag": tag} for tag in tags]
            )
    return True


def on_contact_changed(session: Session, event: Envelope) -> None:
    """Keep a contact's fields, if this event is newer than what is held."""
    if event.data.get("redacted"):
        return  # an erased person's event: it names no one
    contact_id = uuid_value(event.data.get("id", event.aggregate_id), "id")
    apply_contact(session, contact_id, event_version(event), event.data)


def _clear(row: Contact) -> None:
    """Forget everything but the id and version (a tombstone's state)."""
    for name in ("email", "email_key", "first_name", "last_name", "company_id"):
        setattr(row, name, None)
    row.lifecycle_stage = row.owner_id = row.currency = None
    row.last_activity_at = row.contact_created_at = None
    row.custom_fields, row.lifetime_value = {}, Decimal("0.00")
    row.emails_opened = row.emails_clicked = row.deals_won = row.tickets_open = 0
    row.tickets_breached = row.deals_open = 0
    row.updated_at = utcnow()


def _move_memberships(session: Session, from_id: str, to_id: str) -> None:
    """The survivor joins the static segments the duplicate was in."""
    theirs = set(
        session.scalars(select(SegmentMember.segment_id).where(SegmentMember.contact_id == from_id))
    )
    ours = set(
        session.scalars(select(SegmentMember.segment_id).where(SegmentMember.contact_id == to_id))
    )
    now = utcnow()
    for segment_id in sorted(theirs - ours):
        session.add(SegmentMember(segment_id=segment_id, contact_id=to_id, added_at=now))
    session.flush()


def _drop_links(session: Session, contact_id: str) -> None:
    """Delete a contact's tags, static memberships and facts."""
    for model in (ContactTag, SegmentMember, ContactFact):
        session.execute(delete(model).where(model.contact_id == contact_id))


def on_contact_merged(session: Session, event: Envelope) -> None:
    """The survivor as it is now; the duplicate a tombstone whose lists and facts move over."""
    data = event.data
    pair = merged_pair(event)
    if pair is None:
        return
    survivor_id, duplicate_id = pair
    apply_contact(session, survivor_id, event_version(event), data)
    duplicate = _locked(session, duplicate_id) or _new_row(session, duplicate_id)
    if is_tombstone(duplicate):
        return  # erased, or merged already (a redelivery)
    _clear(duplicate)
    duplicate.merged_into = survivor_id
    target = counted_contact(session, survivor_id)
    if target is not None:
        _move_memberships(session, duplicate_id, target)
        session.execute(
            update(ContactFact)
            .where(ContactFact.contact_id == duplicate_id)
            .values(contact_id=target)
            .execution_options(synchronize_session=False)
        )
    _drop_links(session, duplicate_id)
    if target is not None:
        for kind in COUNTERS:
            _recount(session, target, kind)


def erase_contact(session: Session, contact_id: str) -> None:
    """Make a contact a tombstone that holds nothing about the person; consent forgets too."""
    row = _locked(session, contact_id) or _new_row(session, contact_id)
    email = row.email
    _clear(row)
    row.erased, row.merged_into = True, None
    _drop_links(session, contact_id)
    consent.forget_contact(session, contact_id, email)


def on_contact_erased(session: Session, event: Envelope) -> None:
    """Right to be forgotten: the contact and the duplicates merged into it."""
    for contact_id in erased_contact_ids(event):
        erase_contact(session, contact_id)


# --- engagement facts -----------------------------------------------------------------------


def counted_contact(session: Session, contact_id: str | None) -> str | None:
    """The live contact (locked, made if new) a fact counts for, merges followed; or None."""
    for _ in range(MAX_MERGE_HOPS):
        if contact_id is None:
            return None
        row = _locked(session, contact_id) or _new_row(session, contact_id)
        if row.erased:
            return None
        if row.merged_into is None:
            return contact_id
        contact_id = row.merged_into
    return None  # a cycle of merges cannot happen; never loop on one


def _recount(session: Session, contact_id: str, kind: str) -> None:
    """Set the contact's counter of this kind from its active facts (never below 0)."""
    count = session.scalar(
        select(func.count())
        .select_from(ContactFact)
        .where(ContactFact.contact_id == contact_id, ContactFact.kind == kind)
        .where(ContactFact.active.is_(True))
    )
    row = session.get(Contact, contact_id)
    if row is not None and not is_tombstone(row):
        setattr(row, COUNTERS[kind], count or 0)


def record_fact(
    session: Session,
    kind: str,
    subject_id: str,
    contact_value: Any,
    *,
    active: bool,
    version: int | None,
) -> None:
    """Set one fact (when new, or newer by version) and recount the contacts it touches."""
    contact_id = counted_contact(session, optional_uuid(contact_value, "contact_id"))
    # Fresh from the database: a merge or erasure earlier in the batch may have changed it.
    fact = session.get(
        ContactFact, (kind, subject_id), with_for_update=True, populate_existing=True
    )
    if fact is not None and (version is None or version <= fact.version):
        return  # counted already, or this event is older than the one applied
    if fact is None:
        if contact_id is None or (not active and version is None):
            return  # about no one, or nothing to count and no order to remember
        fact = ContactFact(kind=kind, subject_id=subject_id, version=0)
        session.add(fact)
    touched = {fact.contact_id, contact_id} - {None}
    fact.contact_id = contact_id
    fact.active = active and contact_id is not None
    fact.version = version or fact.version
    session.flush()
    for touched_id in sorted(touched):
        _recount(session, touched_id, kind)


def on_email_engaged(session: Session, event: Envelope) -> None:
    """An email opened or clicked: counted once per message."""
    data = event.data
    if data.get("redacted"):
        return
    message_id = uuid_value(data.get("message_id", event.aggregate_id), "message_id")
    kind = "email_opened" if event.type == "email.opened" else "email_clicked"
    record_fact(
        session,
        kind,
        message_id,
        data.get("contact_id"),
        active=True,
        version=event.aggregate_version,
    )


def on_deal_event(session: Session, event: Envelope) -> None:
    """A deal won counts for its contact until it is reopened or deleted."""
    data = event.data
    if data.get("redacted"):
        return
    deal_id = uuid_value(data.get("deal_id") or data.get("id", event.aggregate_id), "deal_id")
    active = event.type == "deal.won"
    record_fact(
        session,
        "deal_won",
        deal_id,
        data.get("contact_id"),
        active=active,
        version=event_version(event),
    )


def on_ticket_event(session: Session, event: Envelope) -> None:
    """A ticket counts as open for its contact while its status is new, open or pending."""
    data = event.data
    if data.get("redacted"):
        return
    ticket_id = uuid_value(data.get("ticket_id") or data.get("id", event.aggregate_id), "ticket_id")
    deleted = event.type == "ticket.deleted"
    status = data.get("status")
    if not deleted and status not in TICKET_STATUSES:
        raise PermanentError(f"{event.type} needs a ticket status ({', '.join(TICKET_STATUSES)})")
    active = not deleted and status in OPEN_TICKET_STATUSES
    record_fact(
        session,
        "ticket_open",
        ticket_id,
        data.get("contact_id"),
        active=active,
        version=event_version(event),
    )
    breached = data.get("sla_breached", False)
    if not isinstance(breached, bool):
        raise PermanentError(f"{event.type} sla_breached must be true or false")
    record_fact(
        session,
        "ticket_breached",
        ticket_id,
        data.get("contact_id"),
        active=active and breached,
        version=event_version(event),
    )


def handlers(settings: Settings) -> dict[str, Handler]:
    """The events that keep the replica and its engagement facts."""
    table: dict[str, Handler] = {
        "contact.created": on_contact_changed,
        "contact.updated": on_contact_changed,
        "contact.merged": on_contact_merged,
        "contact.erased": on_contact_erased,
        "email.opened": on_email_engaged,
        "email.clicked": on_email_engaged,
        "deal.won": on_deal_event,
        "deal.reopened": on_deal_event,
        "deal.deleted": on_deal_event,
    }
    table.update({event_type: on_ticket_event for event_type in TICKET_EVENTS})
    return table
