"""Pipelines and their ordered stages: the default pipeline, look-ups, changes."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.sales.models import Pipeline, Stage
from shared.events import utcnow
from shared.web import not_found

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


def get_pipeline(session: Session, pipeline_id: str) -> Pipeline:
    pipeline = session.get(Pipeline, pipeline_id)
    if pipeline is None:
        raise not_found("pipeline", pipeline_id)
    return pipeline


def get_stage(session: Session, pipeline_id: str, stage_id: str) -> Stage:
    """A stage of this pipeline, or 404."""
    stage = session.get(Stage, stage_id)
    if stage is None or stage.pipeline_id != pipeline_id:
        raise not_found("stage", stage_id)
    return stage
