"""The SLA policies HTTP API, and the policy changes it makes.

One policy per priority. A change to a policy's targets, calendar or priority recomputes
the SLA clocks of the open tickets it governs in the same transaction (see
`sla.reapply_policy`); deleting a policy leaves those tickets without an SLA. Every change
bumps the version and records `sla_policy.created|updated|deleted` carrying the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, request
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.support import sla
from services.support.models import SlaPolicy, new_id
from services.support.policy_schemas import (
    PolicyInSchema,
    PolicyListArgsSchema,
    PolicyPatchSchema,
    check_targets,
    policy_view,
)
from shared.auth import require_role
from shared.events import utcnow
from shared.outbox import record_event
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.web import (
    check_version,
    conflict,
    created_with_etag,
    current_db,
    expected_version,
    invalid,
    load_body,
    no_content,
    not_found,
    parse_args,
    with_etag,
)

policies_api = Blueprint("policies", __name__, url_prefix="/api/v1")
BASE = "/sla-policies"
POLICY_SORTS = {
    "name": SortKey("name", SlaPolicy.name),
    "priority": SortKey("priority", SlaPolicy.priority),
    "created_at": SortKey("created_at", SlaPolicy.created_at),
    "updated_at": SortKey("updated_at", SlaPolicy.updated_at),
}
# The fields whose change moves ticket deadlines.
CLOCK_FIELDS = ("first_response_minutes", "resolution_minutes", "calendar", "priority")


# --- the policy changes ------------------------------------------------------------------


def get_policy(session: Session, policy_id: str, *, for_update: bool = False) -> SlaPolicy:
    """A policy, or 404; `for_update` locks it so changes queue up behind each other."""
    statement = select(SlaPolicy).where(SlaPolicy.id == str(policy_id))
    if for_update:
        statement = statement.with_for_update()
    policy = session.scalars(statement).first()
    if policy is None:
        raise not_found("SLA policy", policy_id)
    return policy


def _ensure_priority_free(session: Session, priority: str) -> None:
    other = sla.policy_for(session, priority)
    if other is not None:
        raise conflict(
            f"The priority {priority!r} has a policy already: {other.id}",
            {"priority": ["A policy for this priority exists already."]},
        )


def _record(session: Session, event_type: str, policy: SlaPolicy, **extra: Any) -> None:
    session.flush()
    data = {**policy_view(policy), "sla_policy_id": policy.id, **extra}
    record_event(session, event_type, policy.id, data, aggregate_version=policy.version)


def create_policy(session: Session, data: Mapping[str, Any]) -> SlaPolicy:
    """A policy for a free priority; its open tickets get deadlines from it."""
    policy_id = data.get("id") or new_id()
    if session.get(SlaPolicy, policy_id) is not None:
        raise conflict(f"An SLA policy with id {policy_id} exists already")
    _ensure_priority_free(session, data["priority"])
    now = utcnow()
    policy = SlaPolicy(
        **{**data, "id": policy_id, "name": data["name"].strip()},
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(policy)
    session.flush()
    changed = sla.reapply_policy(session, policy.priority, None, sla.targets_of(policy), now)
    _record(session, "sla_policy.created", policy, tickets_recomputed=changed)
    return policy


def _effective_changes(
    session: Session, policy: SlaPolicy, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """The changes that change something, checked against the merged policy (422, 409)."""
    changes = {key: value for key, value in changes.items() if getattr(policy, key) != value}
    if "name" in changes:
        changes["name"] = changes["name"].strip()
    try:
        check_targets(
            changes.get("first_response_minutes", policy.first_response_minutes),
            changes.get("resolution_minutes", policy.resolution_minutes),
        )
    except ValidationError as error:
        raise invalid(error.normalized_messages()) from None
    if "priority" in changes:
        _ensure_priority_free(session, changes["priority"])
    return changes


def update_policy(
    session: Session,
    policy: SlaPolicy,
    changes: Mapping[str, Any],
    *,
    expected_version: int | None = None,
) -> SlaPolicy:
    """Change a policy; new targets, calendar or priority recompute its open tickets."""
    check_version(policy.version, expected_version)
    changes = _effective_changes(session, policy, changes)
    if not changes:
        return policy
    before, old_priority, now = sla.targets_of(policy), policy.priority, utcnow()
    for key, value in changes.items():
        setattr(policy, key, value)
    policy.version += 1
    policy.updated_at = now
    session.flush()
    changed = 0
    if any(key in CLOCK_FIELDS for key in changes):
        after = sla.targets_of(policy)
        if policy.priority != old_priority:  # the old priority's tickets lose the policy
            changed += sla.reapply_policy(session, old_priority, before, None, now)
        changed += sla.reapply_policy(session, policy.priority, before, after, now)
    _record(
        session, "sla_policy.updated", policy, changed=sorted(changes), tickets_recomputed=changed
    )
    return policy


def delete_policy(
    session: Session, policy: SlaPolicy, *, expected_version: int | None = None
) -> None:
    """Delete a policy: its open tickets have no SLA from now on (breaches stay recorded)."""
    check_version(policy.version, expected_version)
    now = utcnow()
    changed = sla.reapply_policy(session, policy.priority, sla.targets_of(policy), None, now)
    policy.version += 1
    policy.updated_at = now
    _record(session, "sla_policy.deleted", policy, tickets_recomputed=changed)
    session.delete(policy)


# --- HTTP --------------------------------------------------------------------------------


def writer() -> None:
    """Only support agents and admins change policies; else 403."""
    require_role("support")


policy_list_query = PolicyListArgsSchema()


@policies_api.get(BASE)
def list_policies() -> Any:
    """Policies sorted by name (or ?sort=), filtered by ?priority=, paged."""
    args = parse_args(policy_list_query, request.args)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), POLICY_SORTS, "name")
    statement = select(SlaPolicy)
    if "priority" in args:
        statement = statement.where(SlaPolicy.priority == args["priority"])
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, SlaPolicy.id, limit=limit, cursor=cursor
        )
        return page_answer([policy_view(policy) for policy in rows], next_cursor)


policy_in_in = PolicyInSchema()


@policies_api.post(BASE)
def create() -> Any:
    """Create the policy of a priority (201); 409 if the priority has one."""
    writer()
    data = load_body(policy_in_in)
    with current_db().session() as session:
        body = policy_view(create_policy(session, data))
    return created_with_etag(body, f"/api/v1{BASE}/{body['id']}")


@policies_api.get(f"{BASE}/<uuid:policy_id>")
def get(policy_id: Any) -> Any:
    """One policy, with its version as ETag."""
    with current_db().session() as session:
        return with_etag(policy_view(get_policy(session, policy_id)))


policy_patch_in = PolicyPatchSchema()


@policies_api.patch(f"{BASE}/<uuid:policy_id>")
def update(policy_id: Any) -> Any:
    """Change a policy (If-Match honoured); open tickets follow the new targets."""
    writer()
    changes = load_body(policy_patch_in)
    with current_db().session() as session:
        policy = get_policy(session, policy_id, for_update=True)
        update_policy(session, policy, changes, expected_version=expected_version())
        body = policy_view(policy)
    return with_etag(body)


@policies_api.delete(f"{BASE}/<uuid:policy_id>")
def delete(policy_id: Any) -> Any:
    """Delete a policy (204, If-Match honoured); its open tickets lose their SLA."""
    writer()
    with current_db().session() as session:
        policy = get_policy(session, policy_id, for_update=True)
        delete_policy(session, policy, expected_version=expected_version())
    return no_content()
