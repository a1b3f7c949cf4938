"""Leads: create, change, move through their statuses, delete; each change with its events.

Plain functions taking a session, so the HTTP routes, the public form and the event
handlers go through the same rules and record the same events.

Events (data = the lead view plus `lead_id`, aggregate_version = the lead's version):
`lead.created`, `lead.updated` (`changed` names the fields), `lead.status_changed`
(`from`, `to`), `lead.qualified` (`reason`: manual or score), `lead.deleted`; conversion
records `lead.converted` (services/sales/conversion.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.sales import scoring
from services.sales.lead_schemas import lead_view
from services.sales.models import OPEN_LEAD_STATUSES, Lead, new_id
from shared.auth import Principal
from shared.db import take_write_lock
from shared.events import utcnow
from shared.outbox import record_event
from shared.owner_scope import ensure_in_scope, ensure_owner_allowed
from shared.web import ApiError, check_version, conflict, invalid, not_found

EDITABLE_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "company_name",
    "title",
    "website",
    "source",
    "message",
    "owner_id",
)
# Where a lead may go from each status; `converted` only through the convert endpoint.
TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"working", "qualified", "unqualified"}),
    "working": frozenset({"qualified", "unqualified"}),
    "qualified": frozenset({"working"}),
    "unqualified": frozenset({"working"}),
    "converted": frozenset(),
}


def email_key(email: str | None) -> str | None:
    """The form of an email that de-duplication compares: trimmed and lower-cased."""
    return email.strip().lower() if email else None


def get_lead(session: Session, lead_id: str) -> Lead:
    """The lead with this id, or 404."""
    lead = session.get(Lead, str(lead_id))
    if lead is None:
        raise not_found("Lead", lead_id)
    return lead


def lock_lead(session: Session, lead_id: str) -> Lead:
    """The lead, freshly read and locked until the transaction ends; 404 if unknown."""
    take_write_lock(session)
    lead = session.get(Lead, str(lead_id), with_for_update=True, populate_existing=True)
    if lead is None:
        raise not_found("Lead", lead_id)
    return lead


def find_open_lead_by_email(session: Session, email: str | None) -> Lead | None:
    """The open lead (new, working or qualified) with this email, compared case-insensitively."""
    key = email_key(email)
    if key is None:
        return None
    statement = select(Lead).where(Lead.email_key == key, Lead.status.in_(OPEN_LEAD_STATUSES))
    return session.scalars(statement.limit(1)).first()


def duplicate_email(existing_id: str) -> ApiError:
    return conflict(
        f"An open lead with this email exists already: {existing_id}",
        {"email": [f"An open lead with this email exists already: {existing_id}."]},
    )


def _ensure_no_open_duplicate(session: Session, email: str | None, own_id: str) -> None:
    other = find_open_lead_by_email(session, email)
    if other is not None and other.id != own_id:
        raise duplicate_email(other.id)


def record_lead_event(
    session: Session, event_type: str, lead: Lead, extra: Mapping[str, Any] | None = None
) -> None:
    """`lead.*` carrying the lead as the API shows it, versioned for ordered replicas."""
    session.flush()
    data = {**lead_view(lead), "lead_id": lead.id, **(extra or {})}
    record_event(session, event_type, lead.id, data, aggregate_version=lead.version)


def touch(lead: Lead) -> None:
    lead.version += 1
    lead.updated_at = utcnow()


def finish_change(
    session: Session, lead: Lead, changed: list[str], previous_status: str, reason: str
) -> None:
    """Bump the version and record `lead.updated`, plus the status events if it moved."""
    if not changed:
        return
    touch(lead)
    record_lead_event(session, "lead.updated", lead, {"changed": changed})
    record_status_events(session, lead, previous_status, reason)


def record_status_events(session: Session, lead: Lead, previous_status: str, reason: str) -> None:
    """`lead.status_changed` when the status moved; `lead.qualified` when it became qualified."""
    if lead.status == previous_status:
        return
    moved = {"from": previous_status, "to": lead.status}
    record_lead_event(session, "lead.status_changed", lead, moved)
    if lead.status == "qualified":
        record_lead_event(session, "lead.qualified", lead, {"reason": reason})


def _clean_custom_fields(values: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """`values` merged into `current`; a null removes the field."""
    merged = dict(current)
    for name, value in values.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def _check_reason(status: str, changes: Mapping[str, Any]) -> None:
    if changes.get("unqualified_reason") is not None and status != "unqualified":
        raise invalid({"unqualified_reason": ["Only an unqualified lead has a reason."]})


def _insert(session: Session, lead: Lead) -> None:
    """Add the lead; losing a race for its open email is still a 409 naming the winner."""
    try:
        with session.begin_nested():
            session.add(lead)
    except IntegrityError:
        other = find_open_lead_by_email(session, lead.email)
        if other is not None:
            raise duplicate_email(other.id) from None
        raise conflict("The lead conflicts with an existing record") from None


def create_lead(session: Session, data: Mapping[str, Any], actor: Principal | None) -> Lead:
    """Create a scored lead from validated input; records `lead.created` (and qualified).

    The owner defaults to the actor (None: the system, e.g. the public form, never scoped).
    An open lead with the same email is a 409; an owner the actor may not name, a 403.
    """
    ensure_owner_allowed(actor, data)
    lead_id = str(data.get("id") or new_id())
    if session.get(Lead, lead_id) is not None:
        raise conflict(f"A lead with id {lead_id} exists already")
    status = data.get("status", "new")
    if status == "converted":
        raise conflict("A lead becomes converted only through POST /leads/{id}/convert")
    _check_reason(status, data)
    if status in OPEN_LEAD_STATUSES:
        _ensure_no_open_duplicate(session, data.get("email"), lead_id)
    now = utcnow()
    lead = Lead(id=lead_id, status=status, version=1, created_at=now, updated_at=now)
    for name in EDITABLE_FIELDS:
        setattr(lead, name, data.get(name))
    lead.first_name, lead.last_name = lead.first_name or "", lead.last_name or ""
    lead.source = data.get("source") or "api"
    lead.owner_id = data["owner_id"] if "owner_id" in data else (actor and actor.subject)
    lead.email_key = email_key(lead.email)
    lead.custom_fields = _clean_custom_fields(data.get("custom_fields", {}), {})
    lead.unqualified_reason = data.get("unqualified_reason")
    lead.qualified_at = now if status == "qualified" else None
    lead.rule_points = lead.behaviour_points = lead.score = 0
    lead.score_rules = []
    scoring.refresh_score(session, lead, None)
    _insert(session, lead)
    record_lead_event(session, "lead.created", lead)
    if lead.status == "qualified":
        reason = "manual" if status == "qualified" else "score"
        record_lead_event(session, "lead.qualified", lead, {"reason": reason})
    return lead


def _move(lead: Lead, target: str) -> list[str]:
    """Change the status if the move is allowed (409 otherwise); the fields it changed."""
    if target == lead.status:
        return []
    if target == "converted":
        raise conflict("A lead becomes converted only through POST /leads/{id}/convert")
    if target not in TRANSITIONS[lead.status]:
        raise conflict(f"A lead cannot move from {lead.status} to {target}")
    changed = ["status"]
    lead.status = target
    if target == "qualified":
        lead.qualified_at = utcnow()
        changed.append("qualified_at")
    if target != "unqualified" and lead.unqualified_reason is not None:
        lead.unqualified_reason = None
        changed.append("unqualified_reason")
    return changed


def _set_fields(lead: Lead, changes: Mapping[str, Any]) -> list[str]:
    changed = []
    for name in (*EDITABLE_FIELDS, "unqualified_reason"):
        if name not in changes:
            continue
        value = changes[name]
        if name in ("first_name", "last_name"):
            value = value or ""
        elif name == "source":
            value = value or "api"
        if getattr(lead, name) != value:
            setattr(lead, name, value)
            changed.append(name)
    lead.email_key = email_key(lead.email)
    if "custom_fields" in changes:
        merged = _clean_custom_fields(changes["custom_fields"], lead.custom_fields or {})
        if merged != lead.custom_fields:
            lead.custom_fields = merged
            changed.append("custom_fields")
    return changed


def update_lead(
    session: Session,
    lead: Lead,
    changes: Mapping[str, Any],
    actor: Principal | None,
    *,
    expected_version: int | None = None,
) -> Lead:
    """Apply a partial update (fields and status); rescore; record the change's events.

    The actor's owner scope holds: only their own lead, given to nobody else."""
    ensure_in_scope(actor, lead, "Lead")
    ensure_owner_allowed(actor, changes)
    check_version(lead.version, expected_version)
    if lead.status == "converted":
        raise conflict("A converted lead cannot change; its contact and deal live on")
    previous_status, old_score = lead.status, lead.score
    target = changes.get("status") or lead.status
    if target in OPEN_LEAD_STATUSES:
        email = changes["email"] if "email" in changes else lead.email
        _ensure_no_open_duplicate(session, email, lead.id)
    changed = _move(lead, target)
    _check_reason(lead.status, changes)
    changed += _set_fields(lead, changes)
    if changed:
        changed += scoring.refresh_score(session, lead, old_score)
    reason = "manual" if target == "qualified" else "score"
    finish_change(session, lead, changed, previous_status, reason)
    return lead


def fill_empty_fields(session: Session, lead: Lead, data: Mapping[str, Any]) -> Lead:
    """Give the lead the values it lacks (a web form for a known lead); never overwrite."""
    missing = {
        name: value
        for name, value in data.items()
        if name in EDITABLE_FIELDS and name != "email" and value and not getattr(lead, name)
    }
    return update_lead(session, lead, missing, None) if missing else lead


def delete_lead(session: Session, lead: Lead) -> None:
    """Delete a lead and its behaviour; records `lead.deleted`."""
    data = {**lead_view(lead), "lead_id": lead.id}
    record_event(session, "lead.deleted", lead.id, data, aggregate_version=lead.version + 1)
    session.delete(lead)
