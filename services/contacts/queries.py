"""How contacts are found: list filters, free text, sorting and the search language."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from services.contacts.models import Contact, Tag, contact_tags
from shared.pagination import SortKey
from shared.search import BadFilter, SearchField, column_condition
from shared.web import invalid

CONTACT_SORTS = {
    "created_at": SortKey("created_at", Contact.created_at),
    "updated_at": SortKey("updated_at", Contact.updated_at),
    "first_name": SortKey("first_name", Contact.first_name),
    "last_name": SortKey("last_name", Contact.last_name),
    "email": SortKey(
        "email", func.coalesce(Contact.email_key, ""), attribute="email_key", null_as=""
    ),
    "lifetime_value": SortKey("lifetime_value", Contact.lifetime_value),
    "lifecycle_stage": SortKey("lifecycle_stage", Contact.lifecycle_stage),
}

LIST_FILTERS = ("lifecycle_stage", "owner_id", "company_id", "tag", "email")


def tag_condition(operator: str, value: Any) -> ColumnElement[bool]:
    """Contacts carrying a tag (eq, in, contains, starts_with) or none (neq, exists)."""

    def having(tag_clause: ColumnElement[bool]) -> ColumnElement[bool]:
        return exists(
            select(contact_tags.c.contact_id)
            .join(Tag, Tag.id == contact_tags.c.tag_id)
            .where(contact_tags.c.contact_id == Contact.id, tag_clause)
        )

    if operator == "exists":
        if not isinstance(value, bool):
            raise BadFilter("exists takes true or false.")
        return having(Tag.id.is_not(None)) if value else ~having(Tag.id.is_not(None))
    if operator not in ("eq", "neq", "in", "contains", "starts_with"):
        raise BadFilter(f"tags do not support {operator}.")
    if operator == "in" and isinstance(value, list):
        value = [str(item).lower() for item in value]
    elif isinstance(value, str):
        value = value.lower()
    clause = column_condition(Tag.key, "string", "eq" if operator == "neq" else operator, value)
    return ~having(clause) if operator == "neq" else having(clause)


SEARCH_FIELDS: dict[str, SearchField] = {
    "id": SearchField(Contact.id, "id"),
    "first_name": SearchField(Contact.first_name),
    "last_name": SearchField(Contact.last_name),
    "email": SearchField(Contact.email_key),
    "phone": SearchField(Contact.phone),
    "title": SearchField(Contact.title),
    "company_id": SearchField(Contact.company_id, "id"),
    "owner_id": SearchField(Contact.owner_id, "id"),
    "lifecycle_stage": SearchField(Contact.lifecycle_stage),
    "lifetime_value": SearchField(Contact.lifetime_value, "number"),
    "last_activity_at": SearchField(Contact.last_activity_at, "datetime"),
    "created_at": SearchField(Contact.created_at, "datetime"),
    "updated_at": SearchField(Contact.updated_at, "datetime"),
    "tags": SearchField(condition=tag_condition),
}


def custom_field(name: str) -> SearchField | None:
    """`custom_fields.<name>`: compared as text."""
    prefix = "custom_fields."
    if not name.startswith(prefix) or len(name) <= len(prefix):
        return None
    return SearchField(Contact.custom_fields[name[len(prefix) :]].as_string())


def text_condition(query: str) -> ColumnElement[bool]:
    """Every word of `q` appears in a name, the email, the phone or the title."""
    words = [word for word in query.split() if word][:10]
    columns = (
        Contact.first_name,
        Contact.last_name,
        Contact.email_key,
        Contact.phone,
        Contact.title,
    )
    return and_(*(or_(*(c.icontains(w, autoescape=True) for c in columns)) for w in words))


def list_statement(args: Mapping[str, str]) -> Select[Any]:
    """The contacts matching the list endpoint's query parameters."""
    statement = select(Contact)
    for name in LIST_FILTERS:
        value = args.get(name)
        if value is None:
            continue
        if name == "tag":
            statement = statement.where(tag_condition("eq", value))
        elif name == "email":
            statement = statement.where(Contact.email_key == value.strip().lower())
        else:
            statement = statement.where(getattr(Contact, name) == value)
    unknown = set(args) - set(LIST_FILTERS) - {"q", "sort", "limit", "cursor"}
    if unknown:
        raise invalid({name: ["Unknown query parameter."] for name in sorted(unknown)})
    if args.get("q"):
        statement = statement.where(text_condition(args["q"]))
    return statement
