"""The contacts HTTP API: contacts, search, batches, merge, subject export and erasure."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.contacts import domain, privacy
from services.contacts.models import Contact
from services.contacts.queries import (
    CONTACT_SORTS,
    SEARCH_FIELDS,
    custom_field,
    list_statement,
    text_condition,
)
from services.contacts.schemas import ContactInSchema, MergeSchema, contact_view
from shared.auth import current_principal, require_role
from shared.batch import read_batch, run_batch
from shared.owner_scope import owner_of_scope
from shared.pagination import list_params, page_answer, paginate, parse_sort
from shared.schemas import BatchInputsSchema, BatchReadSchema, SearchSchema
from shared.search import search_condition
from shared.web import (
    ApiError,
    check_version,
    created_with_etag,
    current_db,
    expected_version,
    load_body,
    load_or_422,
    no_content,
    with_etag,
)

contacts_api = Blueprint("contacts", __name__, url_prefix="/api/v1/contacts")

contact_in = ContactInSchema()


def actor_id() -> str:
    return current_principal().subject


def require_privacy_role() -> None:
    """403 unless the caller may merge or erase people (admin, or a privacy role)."""
    require_role(*privacy.PRIVACY_ROLES)


@contacts_api.get("")
def list_contacts() -> Any:
    limit, cursor = list_params()
    sort = parse_sort(request.args.get("sort"), CONTACT_SORTS, "-created_at")
    with current_db().session() as session:
        statement = list_statement(request.args)
        rows, next_cursor = paginate(
            session, statement, sort, Contact.id, limit=limit, cursor=cursor
        )
        return page_answer([contact_view(c) for c in rows], next_cursor)


@contacts_api.post("")
def create_contact() -> Any:
    data = load_body(contact_in)
    with current_db().session() as session:
        contact = domain.create_contact(session, data, actor_id())
        body = contact_view(contact)
    return created_with_etag(body, f"/api/v1/contacts/{body['id']}")


@contacts_api.get("/<uuid:contact_id>")
def get_contact(contact_id: Any) -> Any:
    with current_db().reading() as connection:
        return with_etag(domain.read_contact(connection, str(contact_id)))


@contacts_api.patch("/<uuid:contact_id>")
def update_contact(contact_id: Any) -> Any:
    changes = load_body(contact_in, partial=True)
    if "id" in changes:
        raise ApiError(422, "Unprocessable Entity", errors={"id": ["The id cannot change."]})
    with current_db().session() as session:
        contact = domain.get_contact(session, str(contact_id), for_update=True)
        domain.update_contact(session, contact, changes, expected_version=expected_version())
        body = contact_view(contact)
    return with_etag(body)


@contacts_api.delete("/<uuid:contact_id>")
def delete_contact(contact_id: Any) -> Any:
    given = request.args.getlist("erase")
    erase = given[0].lower() if given else "false"
    if erase not in ("true", "false") or len(given) > 1:  # twice: which one was meant?
        raise ApiError(422, "Unprocessable Entity", errors={"erase": ["Use true or false, once."]})
    if erase == "true":
        require_privacy_role()
    with current_db().session() as session:
        contact = domain.get_contact(session, str(contact_id), for_update=True)
        check_version(contact.version, expected_version())
        if erase == "true":
            privacy.erase_contact(session, contact)
        else:
            domain.delete_contact(session, contact)
    if erase == "true":
        with current_db().session() as session:
            privacy.compact_storage(session)
    return no_content()


search_in = SearchSchema()


@contacts_api.post("/search")
def search_contacts() -> Any:
    spec = load_body(search_in)
    sort = parse_sort(spec["sort"], CONTACT_SORTS, "-created_at")
    condition = search_condition(spec["filter_groups"], SEARCH_FIELDS, custom_field)
    statement = select(Contact).where(condition)
    if spec["query"]:
        statement = statement.where(text_condition(spec["query"]))
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, Contact.id, limit=spec["limit"], cursor=spec["cursor"]
        )
        return page_answer([contact_view(c) for c in rows], next_cursor)


batch_inputs_in = BatchInputsSchema()


@contacts_api.post("/batch/create")
def batch_create() -> Any:
    inputs = load_body(batch_inputs_in)["inputs"]
    actor = actor_id()

    def apply(session: Session, raw: Any) -> Contact:
        return domain.create_contact(session, load_or_422(contact_in, raw), actor)

    return run_batch(inputs, apply, contact_view, 201)


@contacts_api.post("/batch/update")
def batch_update() -> Any:
    inputs = load_body(batch_inputs_in)["inputs"]

    def apply(session: Session, raw: Any) -> Contact:
        changes = load_or_422(contact_in, raw, partial=True)
        if not changes.get("id"):
            raise ApiError(422, "Unprocessable Entity", errors={"id": ["An id is required."]})
        contact = domain.get_contact(session, changes.pop("id"), for_update=True)
        return domain.update_contact(session, contact, changes)

    return run_batch(inputs, apply, contact_view, 200)


batch_read_in = BatchReadSchema()


@contacts_api.post("/batch/read")
def batch_read() -> Any:
    ids = [str(i) for i in load_body(batch_read_in)["ids"]]
    return read_batch(ids, Contact, contact_view)


merge_in = MergeSchema()


@contacts_api.post("/<uuid:contact_id>/merge")
def merge_contact(contact_id: Any) -> Any:
    require_privacy_role()
    duplicate_id = str(load_body(merge_in)["duplicate_id"])
    with current_db().session() as session:
        contact = domain.get_contact(session, str(contact_id), for_update=True)
        if duplicate_id == contact.id:
            raise ApiError(
                422, "Unprocessable Entity", errors={"duplicate_id": ["Cannot merge into itself."]}
            )
        duplicate = domain.get_contact(session, duplicate_id, for_update=True)
        privacy.merge_contacts(session, contact, duplicate)
        body = contact_view(contact)
    return with_etag(body)


@contacts_api.get("/<uuid:contact_id>/export")
def export_subject(contact_id: Any) -> Any:
    with current_db().session() as session:
        contact = domain.get_contact(session, str(contact_id))
        return privacy.subject_export(session, contact, owner_of_scope(g.get("principal")))
