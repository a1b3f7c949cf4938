"""The leads HTTP API: leads, their lists and search, their score, their conversion."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, jsonify, request
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from services.sales import conversion, leads, scoring
from services.sales.lead_schemas import ConvertSchema, LeadInSchema, lead_view
from services.sales.models import LEAD_STATUSES, Lead
from shared.auth import Principal, require_role
from shared.batch import read_batch, run_batch
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.schemas import BatchInputsSchema, BatchReadSchema, SearchSchema
from shared.search import SearchField, column_condition, search_condition
from shared.web import (
    check_version,
    created_with_etag,
    current_db,
    expected_version,
    invalid,
    load_body,
    load_or_422,
    no_content,
    with_etag,
)

leads_api = Blueprint("leads", __name__, url_prefix="/api/v1")

lead_in = LeadInSchema()

LEAD_SORTS = {
    "created_at": SortKey("created_at", Lead.created_at),
    "updated_at": SortKey("updated_at", Lead.updated_at),
    "score": SortKey("score", Lead.score),
    "first_name": SortKey("first_name", Lead.first_name),
    "last_name": SortKey("last_name", Lead.last_name),
    "email": SortKey("email", func.coalesce(Lead.email_key, ""), attribute="email_key", null_as=""),
    "company_name": SortKey("company_name", func.coalesce(Lead.company_name, ""), null_as=""),
    "status": SortKey("status", Lead.status),
}
LIST_FILTERS = ("status", "owner_id", "source", "email")
PAGING = ("q", "sort", "limit", "cursor")


def _email_condition(operator: str, value: Any) -> ColumnElement[bool]:
    """Emails compare case-insensitively, like de-duplication does."""
    lowered = [str(v).lower() for v in value] if isinstance(value, list) else value
    if isinstance(lowered, str):
        lowered = lowered.strip().lower()
    return column_condition(Lead.email_key, "string", operator, lowered)


SEARCH_FIELDS: dict[str, SearchField] = {
    "id": SearchField(Lead.id, "id"),
    "first_name": SearchField(Lead.first_name),
    "last_name": SearchField(Lead.last_name),
    "email": SearchField(condition=_email_condition),
    "phone": SearchField(Lead.phone),
    "company_name": SearchField(Lead.company_name),
    "title": SearchField(Lead.title),
    "website": SearchField(Lead.website),
    "source": SearchField(Lead.source),
    "status": SearchField(Lead.status),
    "score": SearchField(Lead.score, "number"),
    "rule_points": SearchField(Lead.rule_points, "number"),
    "behaviour_points": SearchField(Lead.behaviour_points, "number"),
    "owner_id": SearchField(Lead.owner_id, "id"),
    "contact_id": SearchField(Lead.contact_id, "id"),
    "deal_id": SearchField(Lead.deal_id, "id"),
    "qualified_at": SearchField(Lead.qualified_at, "datetime"),
    "converted_at": SearchField(Lead.converted_at, "datetime"),
    "created_at": SearchField(Lead.created_at, "datetime"),
    "updated_at": SearchField(Lead.updated_at, "datetime"),
}


def custom_field(name: str) -> SearchField | None:
    """`custom_fields.<name>`: compared as text."""
    prefix = "custom_fields."
    if not name.startswith(prefix) or len(name) <= len(prefix):
        return None
    return SearchField(Lead.custom_fields[name[len(prefix) :]].as_string())


def text_condition(query: str) -> ColumnElement[bool]:
    """Every word of `q` appears in a name, the email, the company, the title or the phone."""
    words = [word for word in query.split() if word][:10]
    columns = (
        Lead.first_name,
        Lead.last_name,
        Lead.email_key,
        Lead.company_name,
        Lead.title,
        Lead.phone,
    )
    return and_(*(or_(*(c.icontains(w, autoescape=True) for c in columns)) for w in words))


def _filter(name: str, value: str) -> ColumnElement[bool]:
    if name == "status":
        statuses = [part.strip() for part in value.split(",") if part.strip()]
        if not statuses or any(status not in LEAD_STATUSES for status in statuses):
            raise invalid({"status": [f"Use one or more of {', '.join(LEAD_STATUSES)}."]})
        return Lead.status.in_(statuses)
    if name == "owner_id":
        try:
            return Lead.owner_id == str(uuid.UUID(value))
        except ValueError:
            raise invalid({"owner_id": ["Not a valid UUID."]}) from None
    if name == "email":
        return Lead.email_key == leads.email_key(value)
    return Lead.source == value


def list_statement(args: Mapping[str, str]) -> Select[Any]:
    """The leads matching the list endpoint's query parameters."""
    unknown = set(args) - set(LIST_FILTERS) - set(PAGING)
    if unknown:
        raise invalid({name: ["Unknown query parameter."] for name in sorted(unknown)})
    statement = select(Lead)
    for name in LIST_FILTERS:
        if args.get(name) is not None:
            statement = statement.where(_filter(name, args[name]))
    if args.get("q"):
        statement = statement.where(text_condition(args["q"]))
    return statement


def writer() -> Principal:
    """The caller, who must be allowed to change leads (sales or admin)."""
    return require_role("sales")


@leads_api.get("/leads")
def list_leads() -> Any:
    limit, cursor = list_params()
    sort = parse_sort(request.args.get("sort"), LEAD_SORTS, "-created_at")
    statement = list_statement(request.args)
    with current_db().session() as session:
        rows, next_cursor = paginate(session, statement, sort, Lead.id, limit=limit, cursor=cursor)
        return page_answer([lead_view(lead) for lead in rows], next_cursor)


search_in = SearchSchema()


@leads_api.post("/leads/search")
def search_leads() -> Any:
    spec = load_body(search_in)
    sort = parse_sort(spec["sort"], LEAD_SORTS, "-created_at")
    statement = select(Lead).where(
        search_condition(spec["filter_groups"], SEARCH_FIELDS, custom_field)
    )
    if spec["query"]:
        statement = statement.where(text_condition(spec["query"]))
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, Lead.id, limit=spec["limit"], cursor=spec["cursor"]
        )
        return page_answer([lead_view(lead) for lead in rows], next_cursor)


@leads_api.post("/leads")
def create_lead() -> Any:
    actor = writer()
    data = load_body(lead_in)
    with current_db().session() as session:
        lead = leads.create_lead(session, data, actor)
        body = lead_view(lead)
    return created_with_etag(body, f"/api/v1/leads/{body['id']}")


batch_inputs_in = BatchInputsSchema()


@leads_api.post("/leads/batch/create")
def batch_create() -> Any:
    """Create up to 100 leads; 207 with a result per input when some fail (duplicates...)."""
    actor = writer()
    inputs = load_body(batch_inputs_in)["inputs"]

    def apply(session: Session, raw: Any) -> Lead:
        return leads.create_lead(session, load_or_422(lead_in, raw), actor)

    return run_batch(inputs, apply, lead_view, 201)


@leads_api.post("/leads/batch/update")
def batch_update() -> Any:
    """Change up to 100 leads (each input names its id); 207 when some fail."""
    actor = writer()
    inputs = load_body(batch_inputs_in)["inputs"]

    def apply(session: Session, raw: Any) -> Lead:
        changes = load_or_422(lead_in, raw, partial=True)
        if not changes.get("id"):
            raise invalid({"id": ["An id is required."]})
        lead = leads.lock_lead(session, changes.pop("id"))
        return leads.update_lead(session, lead, changes, actor)

    return run_batch(inputs, apply, lead_view, 200)


batch_read_in = BatchReadSchema()


@leads_api.post("/leads/batch/read")
def batch_read() -> Any:
    """Read up to 100 leads by id; 207 when some are missing."""
    ids = [str(lead_id) for lead_id in load_body(batch_read_in)["ids"]]
    return read_batch(ids, Lead, lead_view)


@leads_api.get("/leads/<uuid:lead_id>")
def get_lead(lead_id: Any) -> Any:
    with current_db().session() as session:
        lead = leads.get_lead(session, str(lead_id))
        body = {**lead_view(lead), "score_breakdown": scoring.score_breakdown(session, lead)}
    return with_etag(body)


@leads_api.get("/leads/<uuid:lead_id>/score")
def get_lead_score(lead_id: Any) -> Any:
    with current_db().session() as session:
        lead = leads.get_lead(session, str(lead_id))
        return jsonify(scoring.score_breakdown(session, lead))


@leads_api.patch("/leads/<uuid:lead_id>")
def update_lead(lead_id: Any) -> Any:
    actor = writer()
    changes = load_body(lead_in, partial=True)
    if "id" in changes:
        raise invalid({"id": ["The id cannot change."]})
    with current_db().session() as session:
        lead = leads.lock_lead(session, str(lead_id))
        leads.update_lead(session, lead, changes, actor, expected_version=expected_version())
        body = lead_view(lead)
    return with_etag(body)


@leads_api.delete("/leads/<uuid:lead_id>")
def delete_lead(lead_id: Any) -> Any:
    writer()
    with current_db().session() as session:
        lead = leads.lock_lead(session, str(lead_id))
        check_version(lead.version, expected_version())
        leads.delete_lead(session, lead)
    return no_content()


convert_in = ConvertSchema()


def _convert_input() -> dict[str, Any]:
    """The convert body: optional, so an empty body converts with the defaults."""
    if not request.get_data(cache=True).strip():
        return load_or_422(convert_in, {})
    return load_body(convert_in)


@leads_api.post("/leads/<uuid:lead_id>/convert")
def convert_lead(lead_id: Any) -> Any:
    actor = writer()
    spec = _convert_input()
    with current_db().session() as session:
        result = conversion.convert_lead(
            session, str(lead_id), spec, actor, expected_version=expected_version()
        )
    return jsonify(result)
