"""Segments: named groups of contacts, dynamic (a filter, see segment_filters.py) or static
(contacts added by hand), and the query that finds their members.

Plain functions taking a session, so the HTTP routes and campaigns use the same rules:
`segment_members_query(session, segment)` is what a campaign launch freezes its recipients
from. Members are always reachable contacts of the replica: not erased, not merged away,
with an email. Counting happens in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Select, delete, exists, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from services.marketing.models import Contact, Segment, SegmentMember, new_id
from services.marketing.replica import is_tombstone
from services.marketing.segment_filters import filter_condition, reachable
from shared.db import take_write_lock
from shared.events import isoformat, utcnow
from shared.web import ApiError, check_version, conflict, invalid, not_found

KINDS = ("dynamic", "static")
MAX_ADDED = 1000
STATIC_HAS_NO_FILTER = "A static segment has no filter: add its members instead."
DYNAMIC_NEEDS_FILTER = "A dynamic segment needs a filter ({'filter_groups': [...]})."


def member_condition(segment: Segment) -> ColumnElement[bool]:
    """Who belongs: the filter's contacts, or the static list's, if reachable."""
    if segment.kind == "static":
        listed = exists(
            select(SegmentMember.contact_id).where(
                SegmentMember.segment_id == segment.id, SegmentMember.contact_id == Contact.id
            )
        ).correlate(Contact)
        return reachable() & listed
    return reachable() & filter_condition(segment.filter or {"filter_groups": []})


def segment_members_query(session: Session, segment: Segment) -> Select[tuple[Contact]]:
    """A select of the segment's member Contact rows now (relative times resolved now)."""
    return select(Contact).where(member_condition(segment))


def count_members(session: Session, segment: Segment) -> int:
    """How many members the segment has now, counted by the database."""
    statement = select(func.count()).select_from(Contact).where(member_condition(segment))
    return session.scalar(statement) or 0


def segment_view(session: Session, segment: Segment) -> dict[str, Any]:
    """A segment as the API answers it, with its member count now."""
    return {
        "id": segment.id,
        "name": segment.name,
        "description": segment.description,
        "kind": segment.kind,
        "filter": segment.filter,
        "member_count": count_members(session, segment),
        "version": segment.version,
        "created_at": isoformat(segment.created_at),
        "updated_at": isoformat(segment.updated_at),
    }


def member_view(contact: Contact) -> dict[str, Any]:
    """A member as the members list shows it."""
    return {
        "id": contact.id,
        "email": contact.email,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "lifecycle_stage": contact.lifecycle_stage,
    }


# --- changes ---------------------------------------------------------------------------------


def get_segment(session: Session, segment_id: Any, *, for_update: bool = False) -> Segment:
    """A segment by id, or 404; `for_update` locks it so changes queue up."""
    statement = select(Segment).where(Segment.id == str(segment_id))
    if for_update:
        take_write_lock(session)
        statement = statement.with_for_update()
    segment = session.scalars(statement).first()
    if segment is None:
        raise not_found("Segment", segment_id)
    return segment


def check_filter(segment_filter: Mapping[str, Any]) -> None:
    """422 naming the filter, under `filter`, that has a bad field, operator or value."""
    try:
        filter_condition(segment_filter)
    except ApiError as error:
        raise invalid({"filter": error.errors or {}}, error.detail or error.title) from None


def _check_filter(kind: str, segment_filter: Mapping[str, Any] | None) -> None:
    """A dynamic segment has a valid filter, a static one none (422 otherwise)."""
    if kind == "dynamic" and segment_filter is None:
        raise invalid({"filter": [DYNAMIC_NEEDS_FILTER]})
    if kind == "static" and segment_filter is not None:
        raise invalid({"filter": [STATIC_HAS_NO_FILTER]})
    if segment_filter is not None:
        check_filter(segment_filter)


def create_segment(session: Session, data: Mapping[str, Any]) -> Segment:
    """A new segment (version 1) from validated input; 409 when the id is taken."""
    segment_id = str(data.get("id") or new_id())
    _check_filter(data["kind"], data.get("filter"))
    take_write_lock(session)
    if session.get(Segment, segment_id) is not None:
        raise conflict(f"A segment with id {segment_id} exists already")
    now = utcnow()
    segment = Segment(
        id=segment_id,
        name=data["name"].strip(),
        description=data.get("description"),
        kind=data["kind"],
        filter=data.get("filter"),
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    session.flush()
    return segment


def touch(segment: Segment) -> None:
    """A new version of the segment."""
    segment.version += 1
    segment.updated_at = utcnow()


def update_segment(
    session: Session,
    segment: Segment,
    changes: Mapping[str, Any],
    *,
    expected_version: int | None = None,
) -> Segment:
    """Change the name, description or filter (a new version when something changes)."""
    check_version(segment.version, expected_version)
    changes = dict(changes)
    if changes.get("kind", segment.kind) != segment.kind:
        raise invalid({"kind": ["The kind of a segment cannot change: make a new segment."]})
    changes.pop("kind", None)
    if "filter" in changes:
        _check_filter(segment.kind, changes["filter"])
    if "name" in changes:
        changes["name"] = changes["name"].strip()
    changes = {key: value for key, value in changes.items() if getattr(segment, key) != value}
    if changes:
        for key, value in changes.items():
            setattr(segment, key, value)
        touch(segment)
        session.flush()
    return segment


def delete_segment(
    session: Session, segment: Segment, *, expected_version: int | None = None
) -> None:
    """Delete a segment (a static one's list with it); campaigns keep their frozen recipients."""
    check_version(segment.version, expected_version)
    session.execute(delete(SegmentMember).where(SegmentMember.segment_id == segment.id))
    session.delete(segment)


def _static(segment: Segment) -> None:
    if segment.kind != "static":
        raise conflict("The members of a dynamic segment come from its filter")


def _refused(session: Session, contact_ids: list[str]) -> dict[str, list[str]]:
    """Errors by index for ids that name no contact (or an erased or merged one)."""
    rows = session.scalars(select(Contact).where(Contact.id.in_(set(contact_ids))))
    usable = {row.id for row in rows if not is_tombstone(row)}
    return {
        str(index): ["No such contact (unknown, erased or merged)."]
        for index, contact_id in enumerate(contact_ids)
        if contact_id not in usable
    }


def add_members(session: Session, segment: Segment, contact_ids: Iterable[str]) -> int:
    """Add contacts to a static list (409 if dynamic, 422 if one is no contact); how many."""
    _static(segment)
    ids = [str(contact_id) for contact_id in contact_ids]
    refused = _refused(session, ids)
    if refused:
        raise invalid({"contact_ids": refused}, "Some contacts cannot be added")
    present = set(
        session.scalars(
            select(SegmentMember.contact_id).where(
                SegmentMember.segment_id == segment.id, SegmentMember.contact_id.in_(set(ids))
            )
        )
    )
    joining = [contact_id for contact_id in dict.fromkeys(ids) if contact_id not in present]
    now = utcnow()
    session.add_all(
        SegmentMember(segment_id=segment.id, contact_id=contact_id, added_at=now)
        for contact_id in joining
    )
    if joining:
        touch(segment)
    session.flush()
    return len(joining)


def remove_member(session: Session, segment: Segment, contact_id: str) -> None:
    """Take a contact off a static segment; 404 when it is not on it."""
    _static(segment)
    member = session.get(SegmentMember, (segment.id, str(contact_id)))
    if member is None:
        raise ApiError(404, "Not Found", f"Contact {contact_id} is not in segment {segment.id}")
    session.delete(member)
    touch(segment)
    session.flush()
