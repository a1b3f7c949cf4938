"""Converting a lead: the deal is made here at once, the contact by the contacts service.

Sales names the contact's id (a new UUID, or the existing contact the caller chose) and
publishes `lead.converted`; contacts creates the contact under that id, or links the
existing one with the same email.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from services.sales import deals, leads
from services.sales.lead_schemas import lead_view
from services.sales.models import Deal, Lead, new_id
from services.sales.schemas import deal_view
from shared.auth import Principal
from shared.events import utcnow
from shared.owner_scope import ensure_in_scope
from shared.web import ApiError, check_version, conflict, invalid

DEAL_NAME_LIMIT = 200


def default_deal_name(lead: Lead) -> str:
    """`<company or full name> deal`, falling back on the email."""
    full_name = f"{lead.first_name} {lead.last_name}".strip()
    subject = lead.company_name or full_name or lead.email or "Lead"
    suffix = " deal"
    return subject[: DEAL_NAME_LIMIT - len(suffix)] + suffix


def _ensure_convertible(lead: Lead) -> None:
    if lead.status == "converted":
        raise conflict(f"The lead {lead.id} is already converted (deal {lead.deal_id})")
    if lead.status == "unqualified":
        raise conflict(
            "An unqualified lead cannot be converted; move it back to working first",
            {"status": ["Only new, working or qualified leads can be converted."]},
        )


def _make_deal(
    session: Session, lead: Lead, draft: Mapping[str, Any], contact_id: str, actor: Principal
) -> Deal:
    """The lead's deal: the caller's draft over defaults (name, the lead's owner...); the
    actor's owner scope holds for whoever it names."""
    data = {
        **draft,
        "name": draft.get("name") or default_deal_name(lead),
        "owner_id": draft.get("owner_id") or lead.owner_id or actor.subject,
        "lead_id": lead.id,
        "contact_id": contact_id,
    }
    try:
        return deals.create_deal(session, data, actor)
    except ApiError as error:
        if error.status == 422 and error.errors:  # the draft's pipeline or stage
            raise invalid({"deal": error.errors}) from None
        raise


def convert_lead(
    session: Session,
    lead_id: str,
    spec: Mapping[str, Any],
    actor: Principal,
    *,
    expected_version: int | None = None,
) -> dict[str, Any]:
    """Convert a new, working or qualified lead: make its deal, name its contact.

    `spec` (validated by ConvertSchema): contact_id (an existing contact to link),
    create_deal (default true), deal (name, amount, currency, pipeline_id, stage_id,
    expected_close_date, owner_id, description). The lead row is locked, so two
    concurrent conversions cannot both succeed. Records `lead.status_changed` and
    `lead.converted`; answers contact_id, deal_id, the lead and the deal.
    """
    lead = leads.lock_lead(session, lead_id)
    ensure_in_scope(actor, lead, "Lead")
    check_version(lead.version, expected_version)
    _ensure_convertible(lead)
    existing_contact = spec.get("contact_id") is not None
    contact_id = str(spec["contact_id"]) if existing_contact else new_id()
    deal = None
    if spec.get("create_deal", True):
        deal = _make_deal(session, lead, spec.get("deal") or {}, contact_id, actor)
    previous_status = lead.status
    lead.status = "converted"
    lead.converted_at = utcnow()
    lead.contact_id = contact_id
    lead.deal_id = deal.id if deal is not None else None
    leads.touch(lead)
    leads.record_status_events(session, lead, previous_status, "manual")
    extra = {"existing_contact": existing_contact}
    leads.record_lead_event(session, "lead.converted", lead, extra)
    return {
        "contact_id": contact_id,
        "deal_id": lead.deal_id,
        "lead": lead_view(lead),
        "deal": deal_view(deal) if deal is not None else None,
    }
