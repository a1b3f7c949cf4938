"""Automations: when an event about a contact meets a rule's conditions, do its actions.

A rule: `{name, description, trigger: {event_type, conditions, inactive_days}, actions,
delay_seconds, enabled}`. Plain functions taking a session, shared by the HTTP API
(automations_api.py) and the worker (automation_triggers.py, automation_runs.py).

Triggers are the event types the marketing queue consumes (TRIGGER_TYPES), plus the
synthetic `contact.inactive`: a worker timer finds contacts inactive for `inactive_days`
(default 90). Conditions: automation_conditions.py. Actions (each at most once per run):
- `send_template {template, variables?}`: `email.requested` to the contact, category
  marketing, unless the contact unsubscribed from the newsletter or the address is
  suppressed (as campaigns decide);
- `add_tag {tags}`: `contact.tag_requested` (the contacts service adds them);
- `create_task {title, due_in_days?}`: `task.requested` for the contact's owner (sales
  makes the task, id uuid5(run id), so a repeated request makes one);
- `add_to_list {segment_id}`: the contact joins a static segment;
- `notify_owner {template, variables?}`: `email.requested` to the contact's owner
  (`to_user_id`), category transactional.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.marketing.models import AutomationRule, AutomationRun, Segment, new_id
from shared.db import take_write_lock
from shared.events import isoformat, utcnow
from shared.web import check_version, conflict, invalid, not_found

INACTIVE = "contact.inactive"
TRIGGER_TYPES = (
    "contact.created",
    "contact.updated",
    "lead.converted",
    "deal.won",
    "deal.lost",
    "deal.stage_changed",
    "ticket.created",
    "ticket.resolved",
    "ticket.sla_breached",
    "email.opened",
    "email.clicked",
    "subscription.changed",
    INACTIVE,
)
ACTION_TYPES = ("send_template", "add_tag", "create_task", "add_to_list", "notify_owner")
RUN_STATUSES = ("scheduled", "done", "skipped", "failed")
DEFAULT_INACTIVE_DAYS = 90
MAX_ACTIONS = 10


# --- views -----------------------------------------------------------------------------------


def trigger_view(rule: AutomationRule) -> dict[str, Any]:
    trigger: dict[str, Any] = {"event_type": rule.event_type, "conditions": rule.conditions}
    if rule.event_type == INACTIVE:
        trigger["inactive_days"] = rule.inactive_days
    return trigger


def rule_view(rule: AutomationRule) -> dict[str, Any]:
    """A rule as the API answers it (`action`: the first action, as API.md names it)."""
    return {
        "id": rule.id,
        "name": rule.name,
        "description": rule.description,
        "trigger": trigger_view(rule),
        "actions": rule.actions,
        "action": rule.actions[0] if rule.actions else None,
        "delay_seconds": rule.delay_seconds,
        "enabled": rule.enabled,
        "version": rule.version,
        "created_at": isoformat(rule.created_at),
        "updated_at": isoformat(rule.updated_at),
    }


def run_view(run: AutomationRun) -> dict[str, Any]:
    """A run as its rule's run log shows it."""
    return {
        "id": run.id,
        "rule_id": run.rule_id,
        "trigger_key": run.trigger_key,
        "event_type": run.event_type,
        "contact_id": run.contact_id,
        "status": run.status,
        "reason": run.reason,
        "due_at": isoformat(run.due_at) if run.due_at else None,
        "ran_at": isoformat(run.ran_at) if run.ran_at else None,
        "actions_done": run.actions_done or [],
        "created_at": isoformat(run.created_at),
    }


# --- checks ----------------------------------------------------------------------------------


def check_actions(session: Session, actions: list[Mapping[str, Any]]) -> None:
    """422 for an `add_to_list` naming no segment, or a dynamic one."""
    errors: dict[str, Any] = {}
    for index, action in enumerate(actions):
        if action["type"] != "add_to_list":
            continue
        segment = session.get(Segment, action["segment_id"])
        if segment is None:
            errors[str(index)] = {"segment_id": ["No segment has this id."]}
        elif segment.kind != "static":
            message = "A dynamic segment's members come from its filter: name a static one."
            errors[str(index)] = {"segment_id": [message]}
    if errors:
        raise invalid({"actions": errors})


def _trigger_columns(trigger: Mapping[str, Any]) -> dict[str, Any]:
    inactive = trigger["event_type"] == INACTIVE
    days = trigger.get("inactive_days") or DEFAULT_INACTIVE_DAYS
    return {
        "event_type": trigger["event_type"],
        "conditions": trigger.get("conditions"),
        "inactive_days": days if inactive else None,
    }


# --- changes ---------------------------------------------------------------------------------


def get_rule(session: Session, rule_id: Any, *, for_update: bool = False) -> AutomationRule:
    """A rule by id, or 404; `for_update` locks it so changes queue up."""
    statement = select(AutomationRule).where(AutomationRule.id == str(rule_id))
    if for_update:
        take_write_lock(session)
        statement = statement.with_for_update()
    rule = session.scalars(statement).first()
    if rule is None:
        raise not_found("Automation", rule_id)
    return rule


def create_rule(session: Session, data: Mapping[str, Any]) -> AutomationRule:
    """A new rule (version 1) from validated input; 409 when the id is taken."""
    rule_id = str(data.get("id") or new_id())
    check_actions(session, data["actions"])
    take_write_lock(session)
    if session.get(AutomationRule, rule_id) is not None:
        raise conflict(f"An automation with id {rule_id} exists already")
    now = utcnow()
    rule = AutomationRule(
        id=rule_id,
        name=data["name"].strip(),
        description=data.get("description"),
        actions=list(data["actions"]),
        delay_seconds=data.get("delay_seconds") or 0,
        enabled=bool(data.get("enabled", False)),
        version=1,
        created_at=now,
        updated_at=now,
        **_trigger_columns(data["trigger"]),
    )
    session.add(rule)
    session.flush()
    return rule


def update_rule(
    session: Session,
    rule: AutomationRule,
    changes: Mapping[str, Any],
    *,
    expected_version: int | None = None,
) -> AutomationRule:
    """Change any of a rule's fields (a new version when something changes)."""
    check_version(rule.version, expected_version)
    values = {key: value for key, value in changes.items() if key != "trigger"}
    if "trigger" in changes:
        values.update(_trigger_columns(changes["trigger"]))
    if "actions" in values:
        check_actions(session, values["actions"])
    if "name" in values:
        values["name"] = values["name"].strip()
    values = {key: value for key, value in values.items() if getattr(rule, key) != value}
    if values:
        for key, value in values.items():
            setattr(rule, key, value)
        rule.version += 1
        rule.updated_at = utcnow()
        session.flush()
    return rule


def delete_rule(
    session: Session, rule: AutomationRule, *, expected_version: int | None = None
) -> None:
    """Delete a rule and its run log (scheduled runs never run)."""
    check_version(rule.version, expected_version)
    session.execute(delete(AutomationRun).where(AutomationRun.rule_id == rule.id))
    session.delete(rule)
