"""Deals: create, change, move between stages, win, lose, reopen, delete; each with its event.

Plain functions taking a session, so HTTP routes, batches, lead conversion and event
handlers all go through the same rules. Every change to a deal bumps its version and
records one event whose `aggregate_version` is that version; every change to what an
open deal counts in the reports goes through `totals` in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.sales import pipelines, totals
from services.sales.models import Deal, Pipeline, Stage, new_id
from services.sales.schemas import deal_view
from shared.auth import Principal
from shared.events import utcnow
from shared.outbox import outbox_row, record_event, record_events
from shared.owner_scope import ensure_in_scope, ensure_owner_allowed, owner_of_scope
from shared.web import check_version, conflict, invalid, not_found

# What PATCH may change besides the placement (pipeline_id, stage_id).
DEAL_FIELDS = (
    "name",
    "contact_id",
    "company_id",
    "lead_id",
    "amount",
    "currency",
    "expected_close_date",
    "owner_id",
    "description",
)


def get_deal(session: Session, deal_id: str, *, for_update: bool = False) -> Deal:
    """A deal, or 404; `for_update` locks its row until the transaction ends."""
    statement = select(Deal).where(Deal.id == str(deal_id))
    if for_update:
        statement = statement.with_for_update()
    deal = session.scalars(statement).first()
    if deal is None:
        raise not_found("deal", deal_id)
    return deal


def _event_data(deal: Deal, extra: Mapping[str, Any]) -> dict[str, Any]:
    return {**deal_view(deal), "deal_id": deal.id, **extra}


def record_deal_event(session: Session, event_type: str, deal: Deal, **extra: Any) -> None:
    """`deal.*` carrying the deal as the API shows it, versioned for ordered replicas."""
    session.flush()
    data = _event_data(deal, extra)
    record_event(session, event_type, deal.id, data, aggregate_version=deal.version)


def touch(deal: Deal) -> None:
    """A new version of the deal: every change bumps it once."""
    deal.version += 1
    deal.updated_at = utcnow()


def _pipeline_for(session: Session, pipeline_id: str) -> Pipeline:
    pipeline = session.get(Pipeline, str(pipeline_id))
    if pipeline is None:
        raise invalid({"pipeline_id": ["No pipeline with this id exists."]})
    return pipeline


def _stage_in(session: Session, pipeline: Pipeline, stage_id: str) -> Stage:
    stage = session.get(Stage, str(stage_id))
    if stage is None or stage.pipeline_id != pipeline.id:
        raise invalid({"stage_id": [f"No stage with this id in the pipeline {pipeline.id}."]})
    return stage


def _placement(session: Session, data: Mapping[str, Any]) -> tuple[Pipeline, Stage]:
    """Where a new deal goes: the named stage, else the first stage of the named pipeline
    (default: the default pipeline). A stage alone names its pipeline too."""
    if data.get("pipeline_id"):
        pipeline = _pipeline_for(session, data["pipeline_id"])
    elif data.get("stage_id"):
        stage = session.get(Stage, str(data["stage_id"]))
        if stage is None:
            raise invalid({"stage_id": ["No stage with this id exists."]})
        pipeline = stage.pipeline
    else:
        pipeline = pipelines.default_pipeline(session)
    if data.get("stage_id"):
        return pipeline, _stage_in(session, pipeline, data["stage_id"])
    if not pipeline.stages:
        raise conflict(f"The pipeline {pipeline.id} has no stages to put a deal in")
    return pipeline, min(pipeline.stages, key=lambda stage: stage.position)


def create_deal(session: Session, data: Mapping[str, Any], actor: Principal | None) -> Deal:
    """Create an open deal from validated input and record `deal.created`.

    `data` may name: id, name (required), contact_id, company_id, lead_id, pipeline_id
    (default: the default pipeline), stage_id (default: its first stage), amount (Decimal),
    currency, expected_close_date (date), owner_id (default: the actor), description.
    An unknown pipeline or a stage outside the pipeline is a 422; an owner the actor may
    not give deals to is a 403. `actor` None: the system (an event), never scoped.
    """
    ensure_owner_allowed(actor, data)
    deal_id = data.get("id") or new_id()
    if session.get(Deal, deal_id) is not None:
        raise conflict(f"A deal with id {deal_id} exists already")
    pipeline, stage = _placement(session, data)
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
        owner_id=data.get("owner_id") or (actor.subject if actor else None),
        description=data.get("description"),
        stage_changed_at=now,
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(deal)
    session.flush()
    totals.account(session, deal, +1)
    record_deal_event(session, "deal.created", deal)
    return deal


def _target_stage(session: Session, deal: Deal, changes: Mapping[str, Any]) -> Stage | None:
    """The stage a change moves the deal to, or None if it stays where it is.

    A stage must belong to the deal's pipeline; a new pipeline needs a stage of its own.
    """
    pipeline_id = str(changes.get("pipeline_id") or deal.pipeline_id)
    stage_id = changes.get("stage_id")
    if pipeline_id != deal.pipeline_id and not stage_id:
        raise invalid({"stage_id": ["Moving to another pipeline needs a stage of that pipeline."]})
    if not stage_id:
        return None
    stage = _stage_in(session, _pipeline_for(session, pipeline_id), stage_id)
    if stage.id == deal.stage_id:
        return None
    if deal.status != "open":
        raise conflict(
            f"The deal is {deal.status}: a closed deal cannot change stage; reopen it first"
        )
    return stage


def update_deal(
    session: Session,
    deal: Deal,
    changes: Mapping[str, Any],
    actor: Principal | None,
    *,
    expected_version: int | None = None,
) -> Deal:
    """Apply a partial update and record one event for it.

    A stage move records `deal.stage_changed` (with from_stage_id and to_stage_id, and
    `changed` naming every changed field); any other change records `deal.updated`.
    The actor's owner scope holds: only their own deal, given to nobody else.
    """
    ensure_in_scope(actor, deal, "deal")
    ensure_owner_allowed(actor, changes)
    check_version(deal.version, expected_version)
    target = _target_stage(session, deal, changes)
    before = totals.snapshot(deal)
    changed = [name for name in DEAL_FIELDS if name in changes and _set(deal, name, changes)]
    from_stage_id = deal.stage_id
    if target is not None:
        changed += _move(deal, target)
    if not changed:
        return deal
    totals.moved(session, before, deal)
    touch(deal)
    if target is None:
        record_deal_event(session, "deal.updated", deal, changed=changed)
    else:
        record_deal_event(
            session,
            "deal.stage_changed",
            deal,
            changed=changed,
            from_stage_id=from_stage_id,
            to_stage_id=target.id,
        )
    return deal


def _move(deal: Deal, target: Stage) -> list[str]:
    """Put the deal in another stage (perhaps of another pipeline); the fields changed."""
    changed = []
    if target.pipeline_id != deal.pipeline_id:
        deal.pipeline_id = target.pipeline_id
        changed.append("pipeline_id")
    deal.stage_id = target.id
    deal.stage_changed_at = utcnow()
    return [*changed, "stage_id"]


def _set(deal: Deal, name: str, changes: Mapping[str, Any]) -> bool:
    """Set one field if it differs; whether it did."""
    value = changes[name]
    if name == "amount":
        value = Decimal(value)
    if getattr(deal, name) == value:
        return False
    setattr(deal, name, value)
    return True


def delete_deal(session: Session, deal: Deal, *, expected_version: int | None = None) -> None:
    """Delete a deal and record `deal.deleted`; its tasks stay, without a deal."""
    check_version(deal.version, expected_version)
    totals.account(session, deal, -1)
    touch(deal)
    record_deal_event(session, "deal.deleted", deal)
    session.delete(deal)


def _ensure_open(deal: Deal, action: str) -> None:
    if deal.status != "open":
        raise conflict(f"The deal is {deal.status} already: only an open deal can be {action}")


def _close(
    session: Session, deal: Deal, status: str, reason: str | None, closed_at: datetime | None
) -> Deal:
    before = totals.snapshot(deal)
    deal.status = status
    deal.lost_reason = reason
    deal.closed_at = closed_at or utcnow()
    totals.moved(session, before, deal)
    touch(deal)
    record_deal_event(session, f"deal.{status}", deal)
    return deal


def win_deal(
    session: Session,
    deal: Deal,
    *,
    closed_at: datetime | None = None,
    expected_version: int | None = None,
) -> Deal:
    """Mark an open deal won (at `closed_at`, default now) and record `deal.won`."""
    check_version(deal.version, expected_version)
    _ensure_open(deal, "won")
    return _close(session, deal, "won", None, closed_at)


def lose_deal(
    session: Session,
    deal: Deal,
    reason: str,
    *,
    closed_at: datetime | None = None,
    expected_version: int | None = None,
) -> Deal:
    """Mark an open deal lost, saying why, and record `deal.lost`."""
    check_version(deal.version, expected_version)
    _ensure_open(deal, "lost")
    return _close(session, deal, "lost", reason, closed_at)


def reopen_deal(session: Session, deal: Deal, *, expected_version: int | None = None) -> Deal:
    """Put a won or lost deal back in play, in the stage it closed in; `deal.reopened`."""
    check_version(deal.version, expected_version)
    if deal.status == "open":
        raise conflict("The deal is open already: only a won or lost deal can be reopened")
    before = totals.snapshot(deal)
    previous = deal.status
    deal.status = "open"
    deal.lost_reason = None
    deal.closed_at = None
    totals.moved(session, before, deal)
    touch(deal)
    record_deal_event(session, "deal.reopened", deal, previous_status=previous)
    return deal


def delete_stage(
    session: Session,
    pipeline: Pipeline,
    stage: Stage,
    move_to: str | None,
    actor: Principal | None,
    *,
    expected_version: int | None = None,
) -> int:
    """Delete a stage, moving its deals to the stage `move_to`; how many deals moved.

    Open deals need somewhere to go: without `move_to` a stage holding any is a 409.
    Closed (won/lost) deals go to `move_to` too, or else to the first remaining stage.
    The last stage of a pipeline cannot be deleted. Lock the pipeline first. An actor
    limited to their own deals may not move anyone else's this way: 409.
    """
    check_version(pipeline.version, expected_version)
    if len(pipeline.stages) <= 1:
        raise conflict("A pipeline needs a stage: its last stage cannot be deleted")
    _ensure_all_in_scope(session, stage, actor)
    target = _move_target(session, pipeline, stage, move_to)
    open_deals = session.scalar(
        select(func.count())
        .select_from(Deal)
        .where(Deal.stage_id == stage.id, Deal.status == "open")
    )
    if open_deals and target is None:
        raise conflict(
            f"The stage holds {open_deals} open deal(s): pass move_to=<stage id> to move them",
            {"move_to": [f"{open_deals} open deal(s) need a stage to move to."]},
        )
    if target is None:
        target = min((s for s in pipeline.stages if s is not stage), key=lambda s: s.position)
    moved = _move_all_deals(session, stage, target)
    totals.recount(session, [stage.id, target.id])
    pipelines.remove_stage(session, pipeline, stage)
    return moved


def _ensure_all_in_scope(session: Session, stage: Stage, actor: Principal | None) -> None:
    """409 when the stage holds deals the actor's owner scope does not reach."""
    owner = owner_of_scope(actor)
    if owner is None:
        return
    theirs = session.scalar(
        select(func.count())
        .select_from(Deal)
        .where(Deal.stage_id == stage.id, Deal.owner_id.is_distinct_from(owner))
    )
    if theirs:
        raise conflict(
            f"The stage holds {theirs} deal(s) of other owners: only they or an admin may move them"
        )


def _move_target(
    session: Session, pipeline: Pipeline, stage: Stage, move_to: str | None
) -> Stage | None:
    if not move_to:
        return None
    target = session.get(Stage, move_to)
    if target is None or target.pipeline_id != pipeline.id:
        raise invalid({"move_to": ["Name another stage of the same pipeline."]})
    if target.id == stage.id:
        raise invalid({"move_to": ["Deals cannot move to the stage being deleted."]})
    return target


def _move_all_deals(session: Session, stage: Stage, target: Stage) -> int:
    """Move every deal of a stage; one event each (`deal.stage_changed` for open deals)."""
    deals = session.scalars(
        select(Deal).where(Deal.stage_id == stage.id).order_by(Deal.id).with_for_update()
    ).all()
    now = utcnow()
    rows = []
    service = session.info["db"].service
    for deal in deals:
        deal.stage_id = target.id
        touch(deal)
        extra = {
            "changed": ["stage_id"],
            "from_stage_id": stage.id,
            "to_stage_id": target.id,
            "reason": "stage_deleted",
        }
        event_type = "deal.updated"
        if deal.status == "open":
            deal.stage_changed_at = now
            event_type = "deal.stage_changed"
        data = _event_data(deal, extra)
        rows.append(outbox_row(service, event_type, deal.id, data, aggregate_version=deal.version))
    session.flush()
    record_events(session, rows)
    return len(deals)
