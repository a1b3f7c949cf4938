"""Pipelines and their ordered stages: the default pipeline, look-ups, changes.

Every change to a pipeline or one of its stages bumps the pipeline's version and records
`pipeline.created|updated|deleted` carrying the whole pipeline with its stages, so other
services can keep stage names without asking. Moving deals out of a deleted stage is a
deal matter: see `deals.delete_stage`, which ends in `remove_stage` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.sales.models import Deal, Pipeline, Stage, new_id
from services.sales.schemas import pipeline_view
from shared.events import utcnow
from shared.outbox import record_event
from shared.web import check_version, conflict, invalid, not_found

# The pipeline every new installation starts with (the initial migration makes the same).
DEFAULT_PIPELINE_ID = "5a1e5000-0000-4000-8000-000000000001"
DEFAULT_PIPELINE_NAME = "Sales pipeline"
DEFAULT_STAGES = (
    ("5a1e5000-0000-4000-8000-000000000011", "Qualification", 10),
    ("5a1e5000-0000-4000-8000-000000000012", "Needs analysis", 25),
    ("5a1e5000-0000-4000-8000-000000000013", "Proposal", 50),
    ("5a1e5000-0000-4000-8000-000000000014", "Negotiation", 75),
    ("5a1e5000-0000-4000-8000-000000000015", "Closing", 90),
)


def ensure_default_pipeline(session: Session) -> Pipeline:
    """The default pipeline, made with its stages if no pipeline is the default yet."""
    pipeline = session.scalar(select(Pipeline).where(Pipeline.is_default.is_(True)))
    if pipeline is not None:
        return pipeline
    now = utcnow()
    pipeline = Pipeline(
        id=DEFAULT_PIPELINE_ID,
        name=DEFAULT_PIPELINE_NAME,
        is_default=True,
        created_at=now,
        updated_at=now,
    )
    pipeline.stages = [
        Stage(
            id=stage_id,
            name=name,
            position=position,
            probability=probability,
            created_at=now,
            updated_at=now,
        )
        for position, (stage_id, name, probability) in enumerate(DEFAULT_STAGES)
    ]
    session.add(pipeline)
    session.flush()
    return pipeline


def default_pipeline(session: Session) -> Pipeline:
    """The pipeline a deal goes into when none is named."""
    return ensure_default_pipeline(session)


def get_pipeline(session: Session, pipeline_id: str, *, for_update: bool = False) -> Pipeline:
    """A pipeline, or 404; `for_update` locks it so stage changes queue up behind each other."""
    statement = select(Pipeline).where(Pipeline.id == str(pipeline_id))
    if for_update:
        statement = statement.with_for_update()
    pipeline = session.scalars(statement).first()
    if pipeline is None:
        raise not_found("pipeline", pipeline_id)
    return pipeline


def get_stage(session: Session, pipeline_id: str, stage_id: str) -> Stage:
    """A stage of this pipeline, or 404."""
    stage = session.get(Stage, str(stage_id))
    if stage is None or stage.pipeline_id != str(pipeline_id):
        raise not_found("stage", stage_id)
    return stage


def record_pipeline_event(
    session: Session, event_type: str, pipeline: Pipeline, **extra: Any
) -> None:
    """`pipeline.*` carrying the pipeline and its ordered stages."""
    session.flush()
    data = {**pipeline_view(pipeline), "pipeline_id": pipeline.id, **extra}
    record_event(session, event_type, pipeline.id, data, aggregate_version=pipeline.version)


def _touch(pipeline: Pipeline) -> None:
    pipeline.version += 1
    pipeline.updated_at = utcnow()


def _ensure_name_free(session: Session, name: str, own_id: str | None = None) -> None:
    statement = select(Pipeline.id).where(func.lower(Pipeline.name) == name.strip().lower())
    other = session.scalar(statement.limit(1))
    if other is not None and other != own_id:
        raise conflict(
            f"A pipeline named {name!r} exists already: {other}",
            {"name": ["A pipeline with this name exists already."]},
        )


def _ensure_stage_name_free(pipeline: Pipeline, name: str, own_id: str | None = None) -> None:
    key = name.strip().lower()
    for stage in pipeline.stages:
        if stage.name.strip().lower() == key and stage.id != own_id:
            raise conflict(
                f"The pipeline has a stage named {stage.name!r} already",
                {"name": ["A stage of this pipeline has this name already."]},
            )


def _ensure_stage_id_free(session: Session, stage_id: str | None) -> None:
    if stage_id and session.get(Stage, stage_id) is not None:
        raise conflict(f"A stage with id {stage_id} exists already")


def _new_stage(session: Session, spec: Mapping[str, Any], position: int) -> Stage:
    _ensure_stage_id_free(session, spec.get("id"))
    now = utcnow()
    return Stage(
        id=spec.get("id") or new_id(),
        name=spec["name"].strip(),
        position=position,
        probability=spec["probability"],
        created_at=now,
        updated_at=now,
    )


def _make_default(session: Session, pipeline: Pipeline) -> None:
    """Make this pipeline the only default; the previous default records its change too."""
    # Lock the current default: a concurrent switch waits here, and the query after the
    # wait reads afresh (a new statement under READ COMMITTED), so it finds the default
    # the other switch made and unsets it: exactly one default remains.
    session.execute(select(Pipeline.id).where(Pipeline.is_default.is_(True)).with_for_update())
    previous = session.scalars(
        select(Pipeline)
        .where(Pipeline.is_default.is_(True), Pipeline.id != pipeline.id)
        .with_for_update()
    ).all()
    for other in previous:
        other.is_default = False
        _touch(other)
        record_pipeline_event(session, "pipeline.updated", other, changed=["is_default"])
    pipeline.is_default = True


def create_pipeline(session: Session, data: Mapping[str, Any]) -> Pipeline:
    """A pipeline with its stages in the given order; records `pipeline.created`."""
    pipeline_id = data.get("id") or new_id()
    if session.get(Pipeline, pipeline_id) is not None:
        raise conflict(f"A pipeline with id {pipeline_id} exists already")
    _ensure_name_free(session, data["name"])
    now = utcnow()
    pipeline = Pipeline(
        id=pipeline_id,
        name=data["name"].strip(),
        is_default=False,
        version=1,
        created_at=now,
        updated_at=now,
    )
    pipeline.stages = [_new_stage(session, spec, i) for i, spec in enumerate(data["stages"])]
    session.add(pipeline)
    session.flush()
    if data.get("is_default"):
        _make_default(session, pipeline)
    record_pipeline_event(session, "pipeline.created", pipeline)
    return pipeline


def update_pipeline(
    session: Session,
    pipeline: Pipeline,
    changes: Mapping[str, Any],
    *,
    expected_version: int | None = None,
) -> Pipeline:
    """Rename a pipeline or make it the default (there is always exactly one default)."""
    check_version(pipeline.version, expected_version)
    changed = []
    if "name" in changes and changes["name"].strip() != pipeline.name:
        _ensure_name_free(session, changes["name"], pipeline.id)
        pipeline.name = changes["name"].strip()
        changed.append("name")
    if changes.get("is_default") is False and pipeline.is_default:
        raise conflict(
            "There must be a default pipeline: make another pipeline the default instead",
            {"is_default": ["Make another pipeline the default instead."]},
        )
    if changes.get("is_default") and not pipeline.is_default:
        _make_default(session, pipeline)
        changed.append("is_default")
    if changed:
        _touch(pipeline)
        record_pipeline_event(session, "pipeline.updated", pipeline, changed=changed)
    return pipeline


def delete_pipeline(
    session: Session, pipeline: Pipeline, *, expected_version: int | None = None
) -> None:
    """Delete a pipeline that holds no deals (open or closed) and is not the default."""
    check_version(pipeline.version, expected_version)
    if pipeline.is_default:
        raise conflict("The default pipeline cannot be deleted; make another the default first")
    deals = session.scalar(
        select(func.count()).select_from(Deal).where(Deal.pipeline_id == pipeline.id)
    )
    if deals:
        raise conflict(
            f"The pipeline holds {deals} deal(s); move or delete them first",
            {"deals": [f"{deals} deal(s) are in this pipeline."]},
        )
    _touch(pipeline)
    record_pipeline_event(session, "pipeline.deleted", pipeline)
    session.delete(pipeline)


def add_stage(
    session: Session,
    pipeline: Pipeline,
    spec: Mapping[str, Any],
    *,
    expected_version: int | None = None,
) -> Stage:
    """Add a stage at `position` (0 = first; default: last); later stages shift down."""
    check_version(pipeline.version, expected_version)
    _ensure_stage_name_free(pipeline, spec["name"])
    count = len(pipeline.stages)
    position = spec.get("position", count)
    if position > count:
        raise invalid({"position": [f"Must be between 0 and {count}."]})
    stages = sorted(pipeline.stages, key=lambda stage: stage.position)
    stage = _new_stage(session, spec, position)
    stages.insert(position, stage)
    pipeline.stages.append(stage)
    _renumber(pipeline, stages)
    _touch(pipeline)
    record_pipeline_event(session, "pipeline.updated", pipeline, changed=["stages"])
    return stage


def update_stage(
    session: Session,
    pipeline: Pipeline,
    stage: Stage,
    changes: Mapping[str, Any],
    *,
    expected_version: int | None = None,
) -> Stage:
    """Rename a stage or change its win probability."""
    check_version(pipeline.version, expected_version)
    changed = False
    if "name" in changes and changes["name"].strip() != stage.name:
        _ensure_stage_name_free(pipeline, changes["name"], stage.id)
        stage.name = changes["name"].strip()
        changed = True
    if "probability" in changes and changes["probability"] != stage.probability:
        stage.probability = changes["probability"]
        changed = True
    if changed:
        stage.updated_at = utcnow()
        _touch(pipeline)
        record_pipeline_event(session, "pipeline.updated", pipeline, changed=["stages"])
    return stage


def reorder_stages(
    session: Session,
    pipeline: Pipeline,
    stage_ids: list[str],
    *,
    expected_version: int | None = None,
) -> Pipeline:
    """Put the stages in the given order: `stage_ids` must name each stage exactly once."""
    check_version(pipeline.version, expected_version)
    by_id = {stage.id: stage for stage in pipeline.stages}
    if len(stage_ids) != len(set(stage_ids)) or set(stage_ids) != set(by_id):
        raise invalid(
            {"stage_ids": ["Give every stage id of this pipeline exactly once, in the new order."]}
        )
    ordered = [by_id[stage_id] for stage_id in stage_ids]
    if [stage.id for stage in sorted(pipeline.stages, key=lambda s: s.position)] != stage_ids:
        _renumber(pipeline, ordered)
        _touch(pipeline)
        record_pipeline_event(session, "pipeline.updated", pipeline, changed=["stages"])
    return pipeline


def remove_stage(session: Session, pipeline: Pipeline, stage: Stage) -> None:
    """Delete a stage that holds no deals any more; later stages move up."""
    remaining = [s for s in sorted(pipeline.stages, key=lambda s: s.position) if s is not stage]
    pipeline.stages.remove(stage)
    _renumber(pipeline, remaining)
    _touch(pipeline)
    record_pipeline_event(
        session, "pipeline.updated", pipeline, changed=["stages"], deleted_stage_id=stage.id
    )


def _renumber(pipeline: Pipeline, ordered: list[Stage]) -> None:
    """Positions 0..n-1 in this order, and the relationship list in the same order."""
    now = utcnow()
    for position, stage in enumerate(ordered):
        if stage.position != position:
            stage.position = position
            stage.updated_at = now
    pipeline.stages.sort(key=lambda stage: stage.position)
