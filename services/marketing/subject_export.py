"""The marketing service's part of the subject access export.

What it holds on a person: its replica of the contact (with tags and engagement facts),
the static segments they were added to, their subscriptions and every line of the
consent ledger, a suppression of their address, the campaigns that went to them, the
history of their lifecycle stage and the automation runs about them. Records keyed by
address (ledger lines, suppressions) are found by the email the gateway passes and by
the one the replica holds, which may lag or lead it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services.marketing.automations import run_view
from services.marketing.campaigns import recipient_view
from services.marketing.ledger import record_view
from services.marketing.models import (
    AutomationRun,
    Campaign,
    CampaignRecipient,
    ConsentRecord,
    Contact,
    ContactFact,
    ContactStage,
    ContactTag,
    Segment,
    SegmentMember,
    Subscription,
    SubscriptionList,
    Suppression,
)
from services.marketing.subscriptions_api import subscription_view
from services.marketing.suppressions import suppression_view
from shared.subject_export import Subject, columns, subject_export_blueprint


def replica_export(session: Session, contact: Contact | None) -> dict[str, Any] | None:
    """The replicated contact with its tags and engagement facts (None if not replicated)."""
    if contact is None:
        return None
    tags = session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact.id))
    facts = session.scalars(select(ContactFact).where(ContactFact.contact_id == contact.id))
    return {
        **columns(contact),
        "tags": sorted(tags),
        "facts": [columns(fact) for fact in facts],
    }


def consent_export(session: Session, contact_id: str, emails: list[str]) -> dict[str, Any]:
    """Subscriptions (with list names), the ledger lines and suppressions of the person."""
    subscriptions = session.execute(
        select(Subscription, SubscriptionList.name)
        .join(SubscriptionList, SubscriptionList.id == Subscription.list_id)
        .where(Subscription.contact_id == contact_id)
        .order_by(Subscription.created_at, Subscription.id)
    )
    ledger = session.scalars(
        select(ConsentRecord)
        .where(or_(ConsentRecord.contact_id == contact_id, ConsentRecord.email.in_(emails)))
        .order_by(ConsentRecord.occurred_at, ConsentRecord.id)
    )
    suppressed = session.scalars(select(Suppression).where(Suppression.email.in_(emails)))
    return {
        "subscriptions": [subscription_view(row, name) for row, name in subscriptions],
        "consent_ledger": [record_view(record) for record in ledger],
        "suppressions": [suppression_view(row) for row in suppressed],
    }


def campaigns_export(session: Session, contact_id: str, email: str | None) -> list[Any]:
    """Each campaign that went (or was to go) to the person, and what they did with it."""
    rows = session.execute(
        select(CampaignRecipient, Campaign.name, Campaign.subject)
        .join(Campaign, Campaign.id == CampaignRecipient.campaign_id)
        .where(CampaignRecipient.contact_id == contact_id)
        .order_by(Campaign.created_at, Campaign.id)
    )
    return [
        {
            "campaign_id": row.campaign_id,
            "campaign": name,
            "subject": subject,
            **recipient_view(row, email),
        }
        for row, name, subject in rows
    ]


def export_person(session: Session, subject: Subject) -> dict[str, Any]:
    """Everything marketing holds on the person (see the module docstring)."""
    contact_id = subject.contact_id
    contact = session.get(Contact, contact_id)
    known = (subject.email, contact.email_key if contact else None)
    emails = sorted({email for email in known if email})
    segments = session.execute(
        select(Segment.id, Segment.name, SegmentMember.added_at)
        .join(SegmentMember, SegmentMember.segment_id == Segment.id)
        .where(SegmentMember.contact_id == contact_id)
        .order_by(SegmentMember.added_at)
    )
    stages = session.scalars(
        select(ContactStage)
        .where(ContactStage.contact_id == contact_id)
        .order_by(ContactStage.version)
    )
    runs = session.scalars(
        select(AutomationRun)
        .where(AutomationRun.contact_id == contact_id)
        .order_by(AutomationRun.created_at, AutomationRun.id)
    )
    return {
        "contact": replica_export(session, contact),
        # Static segments only: a dynamic one is a filter, evaluated when asked, not data.
        "segments": [{"id": id_, "name": name, "added_at": at} for id_, name, at in segments],
        **consent_export(session, contact_id, emails),
        "campaigns": campaigns_export(session, contact_id, contact.email if contact else None),
        "lifecycle_stages": [columns(stage, ("contact_id",)) for stage in stages],
        "automation_runs": [run_view(run) for run in runs],
    }


subject_export_api = subject_export_blueprint("marketing", export_person)
