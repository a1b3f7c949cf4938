"""What sales does when a person is erased or merged in the contacts service."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.sales.deals import record_deal_event
from services.sales.models import Deal, ErasedContact, Lead, Task
from shared.events import utcnow
from shared.idempotency import forget_resource
from shared.outbox import redact_aggregate

ERASED = "(erased)"


def is_erased(session: Session, contact_id: str) -> bool:
    return session.get(ErasedContact, contact_id) is not None


def erase_contact(session: Session, contact_ids: Iterable[str]) -> None:
    """Anonymise the leads, deals and tasks of an erased person; keep the business figures.

    Deals keep amount, stage and status (pipeline and win-rate reports stay true) but lose
    their name, description and the link to the person. Copies of the personal data in
    the outbox and in stored idempotent answers are redacted too.
    """
    ids = sorted(set(contact_ids))
    now = utcnow()
    for contact_id in ids:
        if not is_erased(session, contact_id):
            session.add(ErasedContact(contact_id=contact_id, erased_at=now))
    for lead in session.scalars(select(Lead).where(Lead.contact_id.in_(ids))):
        _anonymise_lead(session, lead)
    for deal in session.scalars(select(Deal).where(Deal.contact_id.in_(ids))):
        deal.name = f"{ERASED} deal {deal.id[:8]}"
        deal.description = None
        deal.contact_id = None
        _touched(session, deal)
    for task in session.scalars(select(Task).where(Task.contact_id.in_(ids))):
        task.title = ERASED
        task.notes = None
        task.contact_id = None
        _touched(session, task)
    session.flush()


def _anonymise_lead(session: Session, lead: Lead) -> None:
    lead.first_name = lead.last_name = ""
    lead.email = lead.email_key = None
    lead.phone = lead.title = lead.website = lead.message = None
    lead.custom_fields = {}
    lead.contact_id = None
    _touched(session, lead)


def _touched(session: Session, record: Lead | Deal | Task) -> None:
    record.version += 1
    record.updated_at = utcnow()
    redact_aggregate(session, record.id, keep={"id": record.id})
    forget_resource(session, record.id)


def repoint_contact(session: Session, duplicate_id: str, contact_id: str) -> list[Deal]:
    """Move leads, deals and tasks of a merged duplicate onto the surviving contact."""
    moved: list[Deal] = []
    for deal in session.scalars(select(Deal).where(Deal.contact_id == duplicate_id)):
        deal.contact_id = contact_id
        deal.version += 1
        deal.updated_at = utcnow()
        record_deal_event(session, "deal.updated", deal, changed=["contact_id"])
        moved.append(deal)
    for record in (
        *session.scalars(select(Lead).where(Lead.contact_id == duplicate_id)),
        *session.scalars(select(Task).where(Task.contact_id == duplicate_id)),
    ):
        record.contact_id = contact_id
        record.version += 1
        record.updated_at = utcnow()
    session.flush()
    return moved
