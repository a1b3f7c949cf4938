"""The pipelines HTTP API: pipelines and their ordered stages."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from marshmallow import fields
from sqlalchemy import select

from services.sales import deals, pipelines
from services.sales.models import Pipeline
from services.sales.schemas import (
    ListArgsSchema,
    PipelineInSchema,
    PipelinePatchSchema,
    StageAddSchema,
    StageOrderSchema,
    StagePatchSchema,
    pipeline_view,
    stage_view,
)
from shared.auth import Principal, require_role
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.schemas import StrictSchema
from shared.web import (
    created,
    created_with_etag,
    current_db,
    expected_version,
    load_body,
    no_content,
    parse_args,
    with_etag,
)

pipelines_api = Blueprint("pipelines", __name__, url_prefix="/api/v1")

PIPELINE_SORTS = {
    "name": SortKey("name", Pipeline.name),
    "created_at": SortKey("created_at", Pipeline.created_at),
    "updated_at": SortKey("updated_at", Pipeline.updated_at),
}


class DeleteStageArgsSchema(StrictSchema):
    move_to = fields.UUID()


delete_stage_query = DeleteStageArgsSchema()


def pipeline_admin() -> Principal:
    """The caller, if they may change pipelines and stages (admin only); else 403.

    A pipeline frames every rep's deals: a stage's removal moves them, its probability
    weighs them in the team's reports.
    """
    return require_role()


list_query = ListArgsSchema()


@pipelines_api.get("/pipelines")
def list_pipelines() -> Any:
    """Pipelines with their ordered stages, sorted by name (or ?sort=), paged."""
    args = parse_args(list_query, request.args)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), PIPELINE_SORTS, "name")
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, select(Pipeline), sort, Pipeline.id, limit=limit, cursor=cursor
        )
        return page_answer([pipeline_view(pipeline) for pipeline in rows], next_cursor)


pipeline_in_in = PipelineInSchema()


@pipelines_api.post("/pipelines")
def create_pipeline() -> Any:
    """Create a pipeline with its stages in the given order (201)."""
    pipeline_admin()
    data = load_body(pipeline_in_in)
    with current_db().session() as session:
        body = pipeline_view(pipelines.create_pipeline(session, data))
    return created_with_etag(body, f"/api/v1/pipelines/{body['id']}")


@pipelines_api.get("/pipelines/<uuid:pipeline_id>")
def get_pipeline(pipeline_id: Any) -> Any:
    """One pipeline with its ordered stages, and its version as ETag."""
    with current_db().session() as session:
        return with_etag(pipeline_view(pipelines.get_pipeline(session, pipeline_id)))


pipeline_patch_in = PipelinePatchSchema()


@pipelines_api.patch("/pipelines/<uuid:pipeline_id>")
def update_pipeline(pipeline_id: Any) -> Any:
    """Rename a pipeline or make it the default (If-Match honoured)."""
    pipeline_admin()
    changes = load_body(pipeline_patch_in)
    with current_db().session() as session:
        pipeline = pipelines.get_pipeline(session, pipeline_id, for_update=True)
        pipelines.update_pipeline(session, pipeline, changes, expected_version=expected_version())
        body = pipeline_view(pipeline)
    return with_etag(body)


@pipelines_api.delete("/pipelines/<uuid:pipeline_id>")
def delete_pipeline(pipeline_id: Any) -> Any:
    """Delete a pipeline without deals that is not the default (204)."""
    pipeline_admin()
    with current_db().session() as session:
        pipeline = pipelines.get_pipeline(session, pipeline_id, for_update=True)
        pipelines.delete_pipeline(session, pipeline, expected_version=expected_version())
    return no_content()


strict_query = StrictSchema()


@pipelines_api.get("/pipelines/<uuid:pipeline_id>/stages")
def list_stages(pipeline_id: Any) -> Any:
    """The stages of a pipeline, in order."""
    parse_args(strict_query, request.args)
    with current_db().session() as session:
        pipeline = pipelines.get_pipeline(session, pipeline_id)
        return page_answer(pipeline_view(pipeline)["stages"], None)


stage_add_in = StageAddSchema()


@pipelines_api.post("/pipelines/<uuid:pipeline_id>/stages")
def add_stage(pipeline_id: Any) -> Any:
    """Add a stage, at `position` (0 = first) or last (201)."""
    pipeline_admin()
    spec = load_body(stage_add_in)
    with current_db().session() as session:
        pipeline = pipelines.get_pipeline(session, pipeline_id, for_update=True)
        stage = pipelines.add_stage(session, pipeline, spec, expected_version=expected_version())
        body = stage_view(stage)
    return created(body, f"/api/v1/pipelines/{body['pipeline_id']}/stages/{body['id']}")


@pipelines_api.get("/pipelines/<uuid:pipeline_id>/stages/<uuid:stage_id>")
def get_stage(pipeline_id: Any, stage_id: Any) -> Any:
    """One stage of a pipeline."""
    with current_db().session() as session:
        pipelines.get_pipeline(session, pipeline_id)
        return stage_view(pipelines.get_stage(session, pipeline_id, stage_id))


stage_patch_in = StagePatchSchema()


@pipelines_api.patch("/pipelines/<uuid:pipeline_id>/stages/<uuid:stage_id>")
def update_stage(pipeline_id: Any, stage_id: Any) -> Any:
    """Rename a stage or change its win probability."""
    pipeline_admin()
    changes = load_body(stage_patch_in)
    with current_db().session() as session:
        pipeline = pipelines.get_pipeline(session, pipeline_id, for_update=True)
        stage = pipelines.get_stage(session, pipeline.id, stage_id)
        pipelines.update_stage(
            session, pipeline, stage, changes, expected_version=expected_version()
        )
        return stage_view(stage)


stage_order_in = StageOrderSchema()


@pipelines_api.put("/pipelines/<uuid:pipeline_id>/stages/order")
def reorder_stages(pipeline_id: Any) -> Any:
    """Put the stages in a new order: every stage id, each once."""
    pipeline_admin()
    stage_ids = load_body(stage_order_in)["stage_ids"]
    with current_db().session() as session:
        pipeline = pipelines.get_pipeline(session, pipeline_id, for_update=True)
        pipelines.reorder_stages(session, pipeline, stage_ids, expected_version=expected_version())
        body = pipeline_view(pipeline)
    return with_etag(body)


@pipelines_api.delete("/pipelines/<uuid:pipeline_id>/stages/<uuid:stage_id>")
def delete_stage(pipeline_id: Any, stage_id: Any) -> Any:
    """Delete a stage; `?move_to=<stage id>` says where its deals go (see deals.delete_stage)."""
    actor = pipeline_admin()
    move_to = parse_args(delete_stage_query, request.args).get("move_to")
    with current_db().session() as session:
        pipeline = pipelines.get_pipeline(session, pipeline_id, for_update=True)
        stage = pipelines.get_stage(session, pipeline.id, stage_id)
        deals.delete_stage(
            session, pipeline, stage, move_to, actor, expected_version=expected_version()
        )
    return no_content()
