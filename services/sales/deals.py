"""Deals: create, change, move between stages, win, lose; each change with its event."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from services.sales import pipelines, totals
from services.sales.models import Deal, new_id
from services.sales.schemas import deal_view
from shared.events import utcnow
from shared.outbox import record_event
from shared.web import conflict


def record_deal_event(session: Session, event_type: str, deal: Deal, **extra: Any) -> None:
    """`deal.*` carrying the deal as the API shows it, versioned for ordered replicas."""
    session.flush()
    data = {**deal_view(deal), "deal_id": deal.id, **extra}
    record_event(session, event_type, deal.id, data, aggregate_version=deal.version)


def create_deal(session: Session, data: Mapping[str, Any], actor_id: str | None = None) -> Deal:
    """Create an open deal from validated input and record `deal.created`.

    `data` may name: id, name (required), contact_id, company_id, lead_id, pipeline_id
    (default: the default pipeline), stage_id (default: its first stage), amount (Decimal),
    currency, expected_close_date (date), owner_id (default: the actor), description.
    """
    deal_id = data.get("id") or new_id()
    if session.get(Deal, deal_id) is not None:
        raise conflict(f"A deal with id {deal_id} exists already")
    pipeline = (
        pipelines.get_pipeline(session, data["pipeline_id"])
        if data.get("pipeline_id")
        else pipelines.default_pipeline(session)
    )
    if data.get("stage_id"):
        stage = pipelines.get_stage(session, pipeline.id, data["stage_id"])
    elif pipeline.stages:
        stage = pipeline.stages[0]
    else:
        raise conflict(f"The pipeline {pipeline.id} has no stages to put a deal in")
    now = utcnow()
    deal = Deal(
        id=deal_id,
        name=data["name"],
        contact_id=data.get("contact_id"),
        company_id=data.get("company_id"),
        lead_id=data.get("lead_id"),
        pipeline_id=pipeline.id,
        stage_id=stage.id,
        amount=Decimal(data.get("amount") or "0.00"),
        currency=data.get("currency") or "EUR",
        expected_close_date=data.get("expected_close_date"),
        status="open",
        owner_id=data.get("owner_id") or actor_id,
        description=data.get("description"),
        stage_changed_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(deal)
    session.flush()
    totals.account(session, deal, +1)
    record_deal_event(session, "deal.created", deal)
    return deal
