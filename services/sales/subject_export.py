"""The sales service's part of the subject access export: leads, deals and tasks.

The person's leads are those linked to the contact and those with their email (a lead
captured before it became the contact, or after, still names them). Deals and tasks are
those of the contact and of those leads; a task of one of those deals is about them too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services.sales.lead_schemas import lead_view
from services.sales.models import Deal, FormSubmission, Lead, LeadBehaviour, Task
from services.sales.schemas import deal_view, task_view
from shared.subject_export import Subject, columns, subject_export_blueprint


def people_leads(session: Session, subject: Subject) -> list[Lead]:
    """The leads linked to the contact or carrying their email, oldest first."""
    condition = Lead.contact_id == subject.contact_id
    if subject.email:
        condition = or_(condition, Lead.email_key == subject.email)
    return list(session.scalars(select(Lead).where(condition).order_by(Lead.created_at, Lead.id)))


def lead_export(session: Session, lead: Lead) -> dict[str, Any]:
    """A lead with what scored it and the form posts that made it."""
    behaviours = session.scalars(
        select(LeadBehaviour)
        .where(LeadBehaviour.lead_id == lead.id)
        .order_by(LeadBehaviour.occurred_at)
    )
    forms = session.scalars(
        select(FormSubmission)
        .where(FormSubmission.lead_id == lead.id)
        .order_by(FormSubmission.submitted_at)
    )
    return {
        **lead_view(lead),
        "score_rules": lead.score_rules or [],
        "behaviours": [columns(row, ("lead_id",)) for row in behaviours],
        # The client address was never kept, only a keyed hash of it: the times are the data.
        "form_submissions": [{"id": row.id, "submitted_at": row.submitted_at} for row in forms],
    }


def export_person(session: Session, subject: Subject) -> dict[str, Any]:
    """Every lead, deal and task of the person, with the leads' scoring and form posts."""
    leads = people_leads(session, subject)
    lead_ids = [lead.id for lead in leads]
    deals = list(
        session.scalars(
            select(Deal)
            .where(or_(Deal.contact_id == subject.contact_id, Deal.lead_id.in_(lead_ids)))
            .order_by(Deal.created_at, Deal.id)
        )
    )
    deal_ids = [deal.id for deal in deals]
    tasks = session.scalars(
        select(Task)
        .where(
            or_(
                Task.contact_id == subject.contact_id,
                Task.lead_id.in_(lead_ids),
                Task.deal_id.in_(deal_ids),
            )
        )
        .order_by(Task.created_at, Task.id)
    )
    return {
        "leads": [lead_export(session, lead) for lead in leads],
        "deals": [deal_view(deal) for deal in deals],
        "tasks": [task_view(task) for task in tasks],
    }


subject_export_api = subject_export_blueprint("sales", export_person)
