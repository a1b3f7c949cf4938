"""The HTTP API of companies, custom field definitions and tags."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from sqlalchemy import func, or_, select

from services.contacts import domain
from services.contacts.models import Company, Contact, CustomField, Tag, contact_tags, new_id
from services.contacts.schemas import (
    CompanyInSchema,
    CustomFieldInSchema,
    CustomFieldPatchSchema,
    company_view,
    contact_view,
    custom_field_view,
)
from shared.events import utcnow
from shared.outbox import record_event
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.web import (
    conflict,
    created,
    created_with_etag,
    current_db,
    expected_version,
    invalid,
    load_body,
    no_content,
    not_found,
    with_etag,
)

companies_api = Blueprint("companies", __name__, url_prefix="/api/v1")

COMPANY_SORTS = {
    "created_at": SortKey("created_at", Company.created_at),
    "updated_at": SortKey("updated_at", Company.updated_at),
    "name": SortKey("name", Company.name),
}
company_in = CompanyInSchema()


def _check_params(*allowed: str) -> None:
    unknown = set(request.args) - {"sort", "limit", "cursor", "q", *allowed}
    if unknown:
        raise invalid({name: ["Unknown query parameter."] for name in sorted(unknown)})


@companies_api.get("/companies")
def list_companies() -> Any:
    _check_params("industry", "domain", "size")
    limit, cursor = list_params()
    sort = parse_sort(request.args.get("sort"), COMPANY_SORTS, "name")
    statement = select(Company)
    for name in ("industry", "size"):
        if request.args.get(name):
            statement = statement.where(getattr(Company, name) == request.args[name])
    if request.args.get("domain"):
        statement = statement.where(Company.domain == request.args["domain"].lower())
    if request.args.get("q"):
        text = request.args["q"]
        statement = statement.where(
            or_(
                Company.name.icontains(text, autoescape=True),
                Company.domain.icontains(text, autoescape=True),
            )
        )
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, Company.id, limit=limit, cursor=cursor
        )
        return page_answer([company_view(c) for c in rows], next_cursor)


@companies_api.post("/companies")
def create_company() -> Any:
    data = load_body(company_in)
    with current_db().session() as session:
        body = company_view(domain.create_company(session, data))
    return created_with_etag(body, f"/api/v1/companies/{body['id']}")


@companies_api.get("/companies/<uuid:company_id>")
def get_company(company_id: Any) -> Any:
    with current_db().session() as session:
        return with_etag(company_view(domain.get_company(session, str(company_id))))


@companies_api.patch("/companies/<uuid:company_id>")
def update_company(company_id: Any) -> Any:
    changes = load_body(company_in, partial=True)
    if "id" in changes:
        raise invalid({"id": ["The id cannot change."]})
    with current_db().session() as session:
        company = domain.get_company(session, str(company_id))
        domain.update_company(session, company, changes, expected_version=expected_version())
        body = company_view(company)
    return with_etag(body)


@companies_api.delete("/companies/<uuid:company_id>")
def delete_company(company_id: Any) -> Any:
    with current_db().session() as session:
        domain.delete_company(session, domain.get_company(session, str(company_id)))
    return no_content()


@companies_api.get("/companies/<uuid:company_id>/contacts")
def company_contacts(company_id: Any) -> Any:
    _check_params()
    limit, cursor = list_params()
    sort = parse_sort(
        request.args.get("sort"),
        {"created_at": SortKey("created_at", Contact.created_at)},
        "created_at",
    )
    with current_db().session() as session:
        company = domain.get_company(session, str(company_id))
        statement = select(Contact).where(Contact.company_id == company.id)
        rows, next_cursor = paginate(
            session, statement, sort, Contact.id, limit=limit, cursor=cursor
        )
        return page_answer([contact_view(c) for c in rows], next_cursor)


@companies_api.get("/custom-fields")
def list_custom_fields() -> Any:
    """Every custom field definition (a short list: one page, whatever the ?limit=)."""
    _check_params("entity")
    list_params()  # still a bad ?limit= or ?cursor= is refused (422), as on every list
    statement = select(CustomField).order_by(CustomField.entity, CustomField.name)
    if request.args.get("entity"):
        statement = statement.where(CustomField.entity == request.args["entity"])
    with current_db().session() as session:
        return page_answer([custom_field_view(f) for f in session.scalars(statement)], None)


custom_field_in_in = CustomFieldInSchema()


@companies_api.post("/custom-fields")
def create_custom_field() -> Any:
    data = load_body(custom_field_in_in)
    with current_db().session() as session:
        if domain.field_definitions(session, data["entity"]).get(data["name"]):
            raise conflict(f"A {data['entity']} field named {data['name']!r} exists already")
        field = CustomField(id=new_id(), **{"options": [], "required": False, **data})
        field.label = data.get("label") or data["name"]
        field.created_at = field.updated_at = utcnow()
        session.add(field)
        session.flush()
        body = custom_field_view(field)
        record_event(session, "custom_field.created", field.id, body)
    return created(body, f"/api/v1/custom-fields/{body['id']}")


def _get_field(session: Any, field_id: Any) -> CustomField:
    field = session.get(CustomField, str(field_id))
    if field is None:
        raise not_found("Custom field", field_id)
    return field


@companies_api.get("/custom-fields/<uuid:field_id>")
def get_custom_field(field_id: Any) -> Any:
    with current_db().session() as session:
        return custom_field_view(_get_field(session, field_id))


custom_field_patch_in = CustomFieldPatchSchema()


@companies_api.patch("/custom-fields/<uuid:field_id>")
def update_custom_field(field_id: Any) -> Any:
    changes = load_body(custom_field_patch_in, partial=True)
    with current_db().session() as session:
        field = _get_field(session, field_id)
        if (
            "options" in changes
            and field.type in ("select", "multiselect")
            and not changes["options"]
        ):
            raise invalid({"options": ["A select field needs options."]})
        for name, value in changes.items():
            setattr(field, name, value)
        field.updated_at = utcnow()
        body = custom_field_view(field)
        record_event(session, "custom_field.updated", field.id, body)
        return body


@companies_api.delete("/custom-fields/<uuid:field_id>")
def delete_custom_field(field_id: Any) -> Any:
    with current_db().session() as session:
        field = _get_field(session, field_id)
        record_event(session, "custom_field.deleted", field.id, {"id": field.id})
        session.delete(field)
    return no_content()


@companies_api.get("/tags")
def list_tags() -> Any:
    """Every tag with its number of contacts (one page, whatever the ?limit=)."""
    _check_params()
    list_params()  # still a bad ?limit= is refused (422), as on every list
    with current_db().session() as session:
        statement = (
            select(Tag.name, func.count(contact_tags.c.contact_id))
            .outerjoin(contact_tags, contact_tags.c.tag_id == Tag.id)
            .group_by(Tag.id, Tag.name)
            .order_by(Tag.name)
        )
        rows = session.execute(statement).tuples()
        return page_answer([{"name": name, "contacts": count} for name, count in rows], None)
