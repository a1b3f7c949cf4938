"""The HTTP API of a contact's notes and interactions (the timeline)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request
from sqlalchemy import select

from services.contacts import domain, timeline
from services.contacts.models import Interaction, Note
from services.contacts.schemas import (
    InteractionInSchema,
    NoteInSchema,
    interaction_view,
    note_view,
)
from shared.auth import current_principal
from shared.owner_scope import owner_of_scope
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.web import created, current_db, invalid, load_body, no_content

timeline_api = Blueprint("timeline", __name__, url_prefix="/api/v1/contacts/<uuid:contact_id>")

NOTE_SORTS = {"created_at": SortKey("created_at", Note.created_at)}
INTERACTION_SORTS = {"occurred_at": SortKey("occurred_at", Interaction.occurred_at)}


def _no_filters(allowed: tuple[str, ...] = ()) -> None:
    unknown = set(request.args) - {"sort", "limit", "cursor", *allowed}
    if unknown:
        raise invalid({name: ["Unknown query parameter."] for name in sorted(unknown)})


@timeline_api.get("/notes")
def list_notes(contact_id: Any) -> Any:
    _no_filters()
    limit, cursor = list_params()
    sort = parse_sort(request.args.get("sort"), NOTE_SORTS, "-created_at")
    with current_db().session() as session:
        contact = domain.get_contact(session, str(contact_id))
        statement = select(Note).where(Note.contact_id == contact.id)
        rows, next_cursor = paginate(session, statement, sort, Note.id, limit=limit, cursor=cursor)
        return page_answer([note_view(n) for n in rows], next_cursor)


note_in_in = NoteInSchema()


@timeline_api.post("/notes")
def add_note(contact_id: Any) -> Any:
    data = load_body(note_in_in)
    with current_db().session() as session:
        contact = domain.get_contact(session, str(contact_id))
        note = timeline.add_note(session, contact, data["body"], current_principal().subject)
        body = note_view(note)
    return created(body, f"/api/v1/contacts/{contact_id}/notes/{body['id']}")


@timeline_api.get("/notes/<uuid:note_id>")
def get_note(contact_id: Any, note_id: Any) -> Any:
    with current_db().session() as session:
        contact = domain.get_contact(session, str(contact_id))
        return note_view(timeline.get_note(session, contact, str(note_id)))


@timeline_api.patch("/notes/<uuid:note_id>")
def update_note(contact_id: Any, note_id: Any) -> Any:
    data = load_body(note_in_in)
    with current_db().session() as session:
        contact = domain.get_contact(session, str(contact_id))
        note = timeline.get_note(session, contact, str(note_id))
        return note_view(timeline.update_note(session, note, data["body"]))


@timeline_api.delete("/notes/<uuid:note_id>")
def delete_note(contact_id: Any, note_id: Any) -> Any:
    with current_db().session() as session:
        contact = domain.get_contact(session, str(contact_id))
        timeline.delete_note(session, timeline.get_note(session, contact, str(note_id)))
    return no_content()


@timeline_api.get("/interactions")
def list_interactions(contact_id: Any) -> Any:
    _no_filters(("kind",))
    limit, cursor = list_params()
    sort = parse_sort(request.args.get("sort"), INTERACTION_SORTS, "-occurred_at")
    with current_db().session() as session:
        contact = domain.get_contact(session, str(contact_id))
        statement = select(Interaction).where(Interaction.contact_id == contact.id)
        if request.args.get("kind"):
            statement = statement.where(Interaction.kind == request.args["kind"])
        rows, next_cursor = paginate(
            session, statement, sort, Interaction.id, limit=limit, cursor=cursor
        )
        scoped_owner = owner_of_scope(g.get("principal"))
        return page_answer([timeline.entry_view(i, scoped_owner) for i in rows], next_cursor)


interaction_in_in = InteractionInSchema()


@timeline_api.post("/interactions")
def log_interaction(contact_id: Any) -> Any:
    data = load_body(interaction_in_in)
    with current_db().session() as session:
        contact = domain.get_contact(session, str(contact_id), for_update=True)
        entry = timeline.log_interaction(session, contact, data, current_principal().subject)
        body = interaction_view(entry)
    return created(body, f"/api/v1/contacts/{contact_id}/interactions/{body['id']}")
