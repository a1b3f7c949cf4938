"""What the pipelines, deals and tasks API accepts and answers."""

from __future__ import annotations

from typing import Any

from shared.events import isoformat
from shared.schemas import money


def deal_view(deal: Any) -> dict[str, Any]:
    """A deal as the API answers it (and as its events carry it)."""
    return {
        "id": deal.id,
        "name": deal.name,
        "contact_id": deal.contact_id,
        "company_id": deal.company_id,
        "lead_id": deal.lead_id,
        "pipeline_id": deal.pipeline_id,
        "stage_id": deal.stage_id,
        "amount": f"{deal.amount:.2f}",
        "currency": deal.currency,
        "value": money(deal.amount, deal.currency),
        "expected_close_date": (
            deal.expected_close_date.isoformat() if deal.expected_close_date else None
        ),
        "status": deal.status,
        "lost_reason": deal.lost_reason,
        "owner_id": deal.owner_id,
        "description": deal.description,
        "stage_changed_at": isoformat(deal.stage_changed_at),
        "closed_at": isoformat(deal.closed_at) if deal.closed_at else None,
        "version": deal.version,
        "created_at": isoformat(deal.created_at),
        "updated_at": isoformat(deal.updated_at),
    }
