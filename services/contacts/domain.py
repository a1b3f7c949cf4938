"""The contacts service's rules: contacts, companies, tags and custom fields.

Plain functions taking a session, so HTTP routes, batch calls, the CSV import and event
handlers all go through the same rules and record the same events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from services.contacts.models import Company, Contact, CustomField, Tag, contact_tags, new_id
from services.contacts.schemas import company_view, contact_view
from shared.events import utcnow
from shared.outbox import record_event
from shared.web import check_version, conflict, invalid, not_found

CONTACT_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "company_id",
    "title",
    "lifecycle_stage",
    "owner_id",
)
COMPANY_FIELDS = ("name", "domain", "industry", "size", "phone", "website", "address")


def email_key(email: str | None) -> str | None:
    """The form of an email that uniqueness compares: trimmed and lower-cased."""
    return email.strip().lower() if email else None


# --- custom fields -------------------------------------------------------------------------


def field_definitions(session: Session, entity: str) -> dict[str, CustomField]:
    rows = session.scalars(select(CustomField).where(CustomField.entity == entity))
    return {field.name: field for field in rows}


def _typed_value(field: CustomField, value: Any) -> Any:
    """The value converted to the field's type, or ValueError saying what was expected."""
    kind = field.type
    if kind == "text":
        if not isinstance(value, str) or len(value) > 10_000:
            raise ValueError("Expected text (at most 10,000 characters).")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError("Expected true or false.")
        return value
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("Expected a whole number.")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("Expected a number.")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise ValueError("Expected a number.") from None
        if not number.is_finite():
            raise ValueError("Expected a finite number.")
        return str(number)
    if kind == "date":
        return date.fromisoformat(_text(value)).isoformat()
    if kind == "datetime":
        moment = datetime.fromisoformat(_text(value).replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError("Expected a date-time with a time zone.")
        return moment.isoformat()
    if kind == "select":
        if value not in field.options:
            raise ValueError(f"Expected one of: {', '.join(field.options)}.")
        return value
    if not isinstance(value, list) or any(item not in field.options for item in value):
        raise ValueError(f"Expected a list of: {', '.join(field.options)}.")
    return list(dict.fromkeys(value))


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("Expected a string.")
    return value


def check_custom_fields(
    definitions: Mapping[str, CustomField],
    values: Mapping[str, Any],
    current: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge `values` into `current`, each checked against its definition (422 otherwise).

    A null value removes the field. Required fields must hold a value afterwards.
    """
    result = dict(current or {})
    errors: dict[str, list[str]] = {}
    for name, value in values.items():
        field = definitions.get(name)
        if field is None:
            errors[name] = ["No custom field with this name is defined."]
        elif value is None:
            result.pop(name, None)
        else:
            try:
                result[name] = _typed_value(field, value)
            except ValueError as error:
                errors[name] = [str(error)]
    for name, field in definitions.items():
        if field.required and result.get(name) in (None, "", []) and name not in errors:
            errors[name] = ["This custom field is required."]
    if errors:
        raise invalid({"custom_fields": errors})
    return result


# --- tags --------------------------------------------------------------------------------


def resolve_tags(session: Session, names: Iterable[str]) -> list[Tag]:
    """The tags with these names, made if new; case-insensitive, duplicates folded."""
    wanted: dict[str, str] = {}
    for name in names:
        clean = name.strip()
        if clean:
            wanted.setdefault(clean.lower(), clean)
    if not wanted:
        return []
    existing = {tag.key: tag for tag in session.scalars(select(Tag).where(Tag.key.in_(wanted)))}
    for key, name in wanted.items():
        if key not in existing:
            tag = Tag(id=new_id(), name=name, key=key)
            session.add(tag)
            existing[key] = tag
    return [existing[key] for key in wanted]


# --- contacts ----------------------------------------------------------------------------


def get_contact(session: Session, contact_id: str, *, for_update: bool = False) -> Contact:
    statement = select(Contact).where(Contact.id == str(contact_id))
    if for_update:
        statement = statement.with_for_update()
    contact = session.scalars(statement).first()
    if contact is None:
        raise not_found("Contact", contact_id)
    return contact


# The statements of `read_contact`, built once: a GET's hot path only binds the id.
_CONTACT_ROW = select(Contact.__table__).where(Contact.__table__.c.id == bindparam("id"))
_CONTACT_TAG_NAMES = (
    select(Tag.name)
    .join(contact_tags, contact_tags.c.tag_id == Tag.id)
    .where(contact_tags.c.contact_id == bindparam("id"))
)


def read_contact(connection: Connection, contact_id: str) -> dict[str, Any]:
    """The contact as the API answers it, read with two plain SELECTs.

    The read path of every single-contact GET (`Database.reading`): no ORM objects are
    made, so it costs a fraction of `get_contact`, which writers use.
    """
    row = connection.execute(_CONTACT_ROW, {"id": str(contact_id)}).first()
    if row is None:
        raise not_found("Contact", contact_id)
    tags = connection.execute(_CONTACT_TAG_NAMES, {"id": row.id}).scalars().all()
    return contact_view(SimpleNamespace(**row._mapping, tags=sorted(tags)))


def find_by_email(session: Session, email: str) -> Contact | None:
    return session.scalars(select(Contact).where(Contact.email_key == email_key(email))).first()


def _ensure_email_free(session: Session, email: str | None, own_id: str | None = None) -> None:
    if not email:
        return
    other = find_by_email(session, email)
    if other is not None and other.id != own_id:
        raise conflict(
            f"A contact with this email exists already: {other.id}",
            {"email": ["A contact with this email exists already."]},
        )


def _ensure_company(session: Session, company_id: str | None) -> None:
    if company_id and session.get(Company, company_id) is None:
        raise invalid({"company_id": ["No company with this id exists."]})


def record_contact_event(session: Session, event_type: str, contact: Contact, **extra: Any) -> None:
    session.flush()
    data = {**contact_view(contact), **extra}
    record_event(session, event_type, contact.id, data, aggregate_version=contact.version)


def create_contact(
    session: Session, data: Mapping[str, Any], actor_id: str | None = None
) -> Contact:
    """Create a contact from validated input and record `contact.created`."""
    contact_id = data.get("id") or new_id()
    if session.get(Contact, contact_id) is not None:
        raise conflict(f"A contact with id {contact_id} exists already")
    _ensure_email_free(session, data.get("email"))
    _ensure_company(session, data.get("company_id"))
    contact = Contact(id=contact_id, custom_fields={}, lifetime_value=Decimal("0.00"))
    for name in CONTACT_FIELDS:
        if name in data:
            setattr(contact, name, data[name])
    contact.first_name = contact.first_name or ""
    contact.last_name = contact.last_name or ""
    contact.email_key = email_key(contact.email)
    contact.custom_fields = check_custom_fields(
        field_definitions(session, "contact"), data.get("custom_fields", {})
    )
    contact.tag_list = resolve_tags(session, data.get("tags", []))
    if contact.owner_id is None and actor_id is not None:
        contact.owner_id = actor_id
    now = utcnow()
    contact.created_at = contact.updated_at = now
    contact.version = 1
    session.add(contact)
    record_contact_event(session, "contact.created", contact)
    return contact


def update_contact(
    session: Session,
    contact: Contact,
    changes: Mapping[str, Any],
    *,
    expected_version: int | None = None,
) -> Contact:
    """Apply a partial update; records `contact.updated` naming the changed fields."""
    check_version(contact.version, expected_version)
    changed: list[str] = []
    if "email" in changes and email_key(changes["email"]) != contact.email_key:
        _ensure_email_free(session, changes["email"], contact.id)
    if "company_id" in changes:
        _ensure_company(session, changes["company_id"])
    for name in CONTACT_FIELDS:
        if name in changes:
            value = changes[name]
            if name in ("first_name", "last_name") and value is None:
                value = ""
            if getattr(contact, name) != value:
                setattr(contact, name, value)
                changed.append(name)
    contact.email_key = email_key(contact.email)
    if "custom_fields" in changes:
        merged = check_custom_fields(
            field_definitions(session, "contact"), changes["custom_fields"], contact.custom_fields
        )
        if merged != contact.custom_fields:
            contact.custom_fields = merged
            changed.append("custom_fields")
    if "tags" in changes:
        tags = resolve_tags(session, changes["tags"])
        if sorted(t.key for t in tags) != sorted(t.key for t in contact.tag_list):
            contact.tag_list = tags
            changed.append("tags")
    if changed:
        touch(contact)
        record_contact_event(session, "contact.updated", contact, changed=changed)
    return contact


def touch(record: Contact | Company) -> None:
    record.version += 1
    record.updated_at = utcnow()


def add_tags(session: Session, contact: Contact, names: Iterable[str]) -> Contact:
    current = [tag.name for tag in contact.tag_list]
    return update_contact(session, contact, {"tags": current + list(names)})


def delete_contact(session: Session, contact: Contact) -> None:
    """Delete a contact (not an erasure: events about it keep their data)."""
    record_event(
        session,
        "contact.deleted",
        contact.id,
        {"id": contact.id},
        aggregate_version=contact.version + 1,
    )
    session.delete(contact)


def ids_by_email_key(session: Session, keys: Iterable[str]) -> dict[str, str]:
    """Which of these (lower-cased) emails belong to a contact already, and whose."""
    statement = select(Contact.email_key, Contact.id).where(Contact.email_key.in_(list(keys)))
    return {key: contact_id for key, contact_id in session.execute(statement).tuples()}


# --- companies ---------------------------------------------------------------------------


def get_company(session: Session, company_id: str) -> Company:
    company = session.get(Company, str(company_id))
    if company is None:
        raise not_found("Company", company_id)
    return company


def _record_company_event(
    session: Session, event_type: str, company: Company, **extra: Any
) -> None:
    session.flush()
    data = {**company_view(company), **extra}
    record_event(session, event_type, company.id, data, aggregate_version=company.version)


def create_company(session: Session, data: Mapping[str, Any]) -> Company:
    company_id = data.get("id") or new_id()
    if session.get(Company, company_id) is not None:
        raise conflict(f"A company with id {company_id} exists already")
    company = Company(id=company_id, version=1, name=data["name"])
    for name in COMPANY_FIELDS:
        if name in data:
            setattr(company, name, data[name])
    if company.domain:
        company.domain = company.domain.lower()
    company.custom_fields = check_custom_fields(
        field_definitions(session, "company"), data.get("custom_fields", {})
    )
    company.created_at = company.updated_at = utcnow()
    session.add(company)
    _record_company_event(session, "company.created", company)
    return company


def update_company(
    session: Session, company: Company, changes: Mapping[str, Any], *, expected_version: int | None
) -> Company:
    check_version(company.version, expected_version)
    changed = []
    for name in COMPANY_FIELDS:
        if name in changes:
            value = changes[name].lower() if name == "domain" and changes[name] else changes[name]
            if getattr(company, name) != value:
                setattr(company, name, value)
                changed.append(name)
    if "custom_fields" in changes:
        merged = check_custom_fields(
            field_definitions(session, "company"), changes["custom_fields"], company.custom_fields
        )
        if merged != company.custom_fields:
            company.custom_fields = merged
            changed.append("custom_fields")
    if changed:
        touch(company)
        _record_company_event(session, "company.updated", company, changed=changed)
    return company


def delete_company(session: Session, company: Company) -> None:
    """Delete a company; its contacts stay, without a company."""
    record_event(
        session,
        "company.deleted",
        company.id,
        {"id": company.id},
        aggregate_version=company.version + 1,
    )
    session.delete(company)


def company_by_name(session: Session, name: str) -> Company | None:
    return session.scalars(
        select(Company).where(func.lower(Company.name) == name.strip().lower()).limit(1)
    ).first()


def tag_names_by_contact(session: Any, contact_ids: list[str]) -> dict[str, list[str]]:
    """The tag names of each of these contacts (one query; a Session or a Connection)."""
    result: dict[str, list[str]] = {}
    if contact_ids:
        query = (
            select(contact_tags.c.contact_id, Tag.name)
            .join(Tag, Tag.id == contact_tags.c.tag_id)
            .where(contact_tags.c.contact_id.in_(contact_ids))
        )
        for contact_id, name in session.execute(query):
            result.setdefault(contact_id, []).append(name)
    return result
