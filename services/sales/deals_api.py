"""The deals HTTP API: deals, their list and search, batches, and win/lose/reopen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.sales import deals
from services.sales.deal_queries import (
    DEAL_SORTS,
    DEFAULT_SORT,
    SEARCH_FIELDS,
    list_statement,
    text_condition,
)
from services.sales.models import Deal
from services.sales.schemas import (
    DealInSchema,
    DealListArgsSchema,
    LoseSchema,
    NoBodySchema,
    WinSchema,
    deal_view,
    optional_body,
    refuse_nul,
)
from shared.auth import Principal, require_role
from shared.batch import read_batch, run_batch
from shared.pagination import list_params, page_answer, paginate, parse_sort
from shared.schemas import BatchInputsSchema, BatchReadSchema, SearchSchema
from shared.search import search_condition
from shared.web import (
    created_with_etag,
    current_db,
    expected_version,
    invalid,
    load_body,
    load_or_422,
    no_content,
    parse_args,
    with_etag,
)

deals_api = Blueprint("deals", __name__, url_prefix="/api/v1")

deal_in = DealInSchema()


def writer() -> Principal:
    """The caller, if they may change deals (sales or admin); else 403."""
    return require_role("sales")


def _changes() -> dict[str, Any]:
    changes = load_body(deal_in, partial=True)
    if "id" in changes:
        raise invalid({"id": ["The id cannot change."]})
    return changes


deal_list_query = DealListArgsSchema()


@deals_api.get("/deals")
def list_deals() -> Any:
    """Deals matching the filters (status, pipeline, stage, owner, close dates, q), paged."""
    args = parse_args(deal_list_query, request.args)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), DEAL_SORTS, DEFAULT_SORT)
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, list_statement(args), sort, Deal.id, limit=limit, cursor=cursor
        )
        return page_answer([deal_view(deal) for deal in rows], next_cursor)


@deals_api.post("/deals")
def create_deal() -> Any:
    """Create an open deal (201); defaults: default pipeline, its first stage, caller."""
    actor = writer()
    data = load_body(deal_in)
    with current_db().session() as session:
        body = deal_view(deals.create_deal(session, data, actor))
    return created_with_etag(body, f"/api/v1/deals/{body['id']}")


@deals_api.get("/deals/<uuid:deal_id>")
def get_deal(deal_id: Any) -> Any:
    """One deal, with its version as ETag."""
    with current_db().session() as session:
        return with_etag(deal_view(deals.get_deal(session, deal_id)))


@deals_api.patch("/deals/<uuid:deal_id>")
def update_deal(deal_id: Any) -> Any:
    """Change some fields of a deal, its stage included (If-Match honoured)."""
    actor = writer()
    changes = _changes()
    with current_db().session() as session:
        deal = deals.get_deal(session, deal_id, for_update=True)
        deals.update_deal(session, deal, changes, actor, expected_version=expected_version())
        body = deal_view(deal)
    return with_etag(body)


@deals_api.delete("/deals/<uuid:deal_id>")
def delete_deal(deal_id: Any) -> Any:
    """Delete a deal (204)."""
    writer()
    with current_db().session() as session:
        deal = deals.get_deal(session, deal_id, for_update=True)
        deals.delete_deal(session, deal, expected_version=expected_version())
    return no_content()


def _act(deal_id: Any, action: Callable[[Session, Deal], Deal]) -> Response:
    with current_db().session() as session:
        deal = deals.get_deal(session, deal_id, for_update=True)
        body = deal_view(action(session, deal))
    return with_etag(body)


win_in = WinSchema()


@deals_api.post("/deals/<uuid:deal_id>/win")
def win_deal(deal_id: Any) -> Any:
    """Mark an open deal won, now or at `closed_at`."""
    writer()
    data, version = optional_body(win_in), expected_version()
    return _act(
        deal_id,
        lambda session, deal: deals.win_deal(
            session, deal, closed_at=data.get("closed_at"), expected_version=version
        ),
    )


lose_in = LoseSchema()


@deals_api.post("/deals/<uuid:deal_id>/lose")
def lose_deal(deal_id: Any) -> Any:
    """Mark an open deal lost, with the `reason`."""
    writer()
    data, version = load_body(lose_in), expected_version()
    return _act(
        deal_id,
        lambda session, deal: deals.lose_deal(
            session,
            deal,
            data["reason"],
            closed_at=data.get("closed_at"),
            expected_version=version,
        ),
    )


no_body_in = NoBodySchema()


@deals_api.post("/deals/<uuid:deal_id>/reopen")
def reopen_deal(deal_id: Any) -> Any:
    """Put a won or lost deal back in play."""
    writer()
    optional_body(no_body_in)
    version = expected_version()
    return _act(
        deal_id,
        lambda session, deal: deals.reopen_deal(session, deal, expected_version=version),
    )


search_in = SearchSchema()


@deals_api.post("/deals/search")
def search_deals() -> Any:
    """Deals matching filter groups (OR of ANDs) and free text, paged."""
    spec = load_body(search_in)
    refuse_nul(spec)
    sort = parse_sort(spec["sort"], DEAL_SORTS, DEFAULT_SORT)
    statement = select(Deal).where(search_condition(spec["filter_groups"], SEARCH_FIELDS))
    if spec["query"]:
        statement = statement.where(text_condition(spec["query"]))
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, Deal.id, limit=spec["limit"], cursor=spec["cursor"]
        )
        return page_answer([deal_view(deal) for deal in rows], next_cursor)


batch_inputs_in = BatchInputsSchema()


@deals_api.post("/deals/batch/create")
def batch_create() -> Any:
    """Create up to 100 deals; 207 with a result per input when some fail."""
    actor = writer()
    inputs = load_body(batch_inputs_in)["inputs"]

    def apply(session: Session, raw: Any) -> Deal:
        return deals.create_deal(session, load_or_422(deal_in, raw), actor)

    return run_batch(inputs, apply, deal_view, 201)


@deals_api.post("/deals/batch/update")
def batch_update() -> Any:
    """Change up to 100 deals (each input names its id); 207 when some fail."""
    actor = writer()
    inputs = load_body(batch_inputs_in)["inputs"]

    def apply(session: Session, raw: Any) -> Deal:
        changes = load_or_422(deal_in, raw, partial=True)
        if not changes.get("id"):
            raise invalid({"id": ["An id is required."]})
        deal = deals.get_deal(session, changes.pop("id"), for_update=True)
        return deals.update_deal(session, deal, changes, actor)

    return run_batch(inputs, apply, deal_view, 200)


batch_read_in = BatchReadSchema()


@deals_api.post("/deals/batch/read")
def batch_read() -> Any:
    """Read up to 100 deals by id; 207 when some are missing."""
    ids = [str(deal_id) for deal_id in load_body(batch_read_in)["ids"]]
    return read_batch(ids, Deal, deal_view)
