"""What an automation's actions do for one contact, in the run's transaction.

Each action answers an outcome `{type, status (done|skipped|failed), detail?}`; its events
go into the outbox with the run (aggregate: the contact, so an erasure redacts the unsent
ones). Ids are derived from the run, so whatever repeats, the effect is one:
- `send_template`: `email.requested` {to, contact_id, template, variables {…, contact,
  unsubscribe_url}, category "marketing", message_id, headers {List-Unsubscribe},
  automation_id, automation_run_id}; skipped without an address, when the contact
  unsubscribed from the newsletter (the default list, as campaigns without a list) or the
  address is suppressed (erased addresses too, by hash).
- `add_tag`: `contact.tag_requested` {contact_id, tags, automation_id}; skipped when the
  replica shows every tag already.
- `create_task`: `task.requested` {task_id, title, contact_id, owner_id (the contact's),
  due_at, automation_id}.
- `add_to_list`: the contact joins the static segment (failed when it is gone or dynamic).
- `notify_owner`: `email.requested` {to_user_id (the contact's owner), template, variables
  {…, contact}, category "transactional", message_id, automation_id}; skipped without an
  owner. No `contact_id`: the mail is for the owner, never for the contact.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.marketing import segments
from services.marketing.consent import (
    default_list,
    suppressed_among,
    unsubscribed_or_suppressed_condition,
)
from services.marketing.models import AutomationRun, Contact, ContactTag
from services.marketing.unsubscribe import unsubscribe_url
from shared.config import Settings
from shared.events import isoformat, utcnow
from shared.outbox import record_event
from shared.web import ApiError

Outcome = dict[str, Any]
Action = Callable[[Session, Settings, AutomationRun, Contact, int, Mapping[str, Any]], Outcome]


def derived_id(run: AutomationRun, index: int, kind: str) -> str:
    """The id of what a run's action makes: the same however often the action is done."""
    return str(uuid.uuid5(uuid.UUID(run.id), f"{index}:{kind}"))


def _done(action: Mapping[str, Any], detail: str | None = None) -> Outcome:
    outcome: Outcome = {"type": action["type"], "status": "done"}
    return {**outcome, "detail": detail} if detail else outcome


def _not_done(action: Mapping[str, Any], status: str, detail: str) -> Outcome:
    return {"type": action["type"], "status": status, "detail": detail}


def contact_variables(contact: Contact) -> dict[str, Any]:
    """`contact` for templates: who the automation ran for."""
    names = [part for part in (contact.first_name, contact.last_name) if part]
    return {
        "id": contact.id,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "name": " ".join(names) or None,
        "email": contact.email,
    }


def _may_receive_marketing(session: Session, contact: Contact, list_id: str) -> bool:
    left_out = unsubscribed_or_suppressed_condition(Contact.id, Contact.email_key, list_id)
    found = session.scalar(select(Contact.id).where(Contact.id == contact.id, left_out))
    return found is None and not suppressed_among(session, [contact.email or ""])


def send_template(
    session: Session,
    settings: Settings,
    run: AutomationRun,
    contact: Contact,
    index: int,
    action: Mapping[str, Any],
) -> Outcome:
    """Email the contact a template (marketing: consent and suppressions respected)."""
    if not contact.email:
        return _not_done(action, "skipped", "The contact has no email address.")
    list_id = default_list(session).id
    if not _may_receive_marketing(session, contact, list_id):
        return _not_done(action, "skipped", "The contact is unsubscribed or suppressed.")
    link = unsubscribe_url(settings, contact.id, contact.email, list_id)
    variables = {
        **(action.get("variables") or {}),
        "contact": contact_variables(contact),
        "unsubscribe_url": link,
    }
    data = {
        "to": contact.email,
        "contact_id": contact.id,
        "template": action["template"],
        "variables": variables,
        "category": "marketing",
        "message_id": derived_id(run, index, "email"),
        "headers": {"List-Unsubscribe": f"<{link}>"},
        "automation_id": run.rule_id,
        "automation_run_id": run.id,
    }
    record_event(session, "email.requested", contact.id, data)
    return _done(action)


def add_tag(
    session: Session,
    settings: Settings,
    run: AutomationRun,
    contact: Contact,
    index: int,
    action: Mapping[str, Any],
) -> Outcome:
    """Ask the contacts service to tag the contact (unless it has every tag already)."""
    held = set(session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact.id)))
    if all(tag.strip().lower() in held for tag in action["tags"]):
        return _not_done(action, "skipped", "The contact has these tags already.")
    data = {"contact_id": contact.id, "tags": list(action["tags"]), "automation_id": run.rule_id}
    record_event(session, "contact.tag_requested", contact.id, data)
    return _done(action)


def create_task(
    session: Session,
    settings: Settings,
    run: AutomationRun,
    contact: Contact,
    index: int,
    action: Mapping[str, Any],
) -> Outcome:
    """Ask sales for a task about the contact, for the contact's owner."""
    days = action.get("due_in_days")
    due_at = utcnow() + timedelta(days=days) if days is not None else None
    data = {
        "task_id": derived_id(run, index, "task"),
        "title": action["title"],
        "contact_id": contact.id,
        "owner_id": contact.owner_id,
        "due_at": isoformat(due_at) if due_at else None,
        "automation_id": run.rule_id,
    }
    record_event(session, "task.requested", contact.id, data)
    return _done(action, data["task_id"])


def add_to_list(
    session: Session,
    settings: Settings,
    run: AutomationRun,
    contact: Contact,
    index: int,
    action: Mapping[str, Any],
) -> Outcome:
    """Put the contact on a static segment (a member already: done all the same)."""
    try:
        segment = segments.get_segment(session, action["segment_id"], for_update=True)
        with session.begin_nested():
            added = segments.add_members(session, segment, [contact.id])
    except ApiError as error:
        return _not_done(action, "failed", error.detail or error.title)
    except IntegrityError:  # added meanwhile by another transaction
        added = 0
    return _done(action, None if added else "A member already.")


def notify_owner(
    session: Session,
    settings: Settings,
    run: AutomationRun,
    contact: Contact,
    index: int,
    action: Mapping[str, Any],
) -> Outcome:
    """Email the contact's owner (a user) about the contact."""
    if not contact.owner_id:
        return _not_done(action, "skipped", "The contact has no owner.")
    variables = {**(action.get("variables") or {}), "contact": contact_variables(contact)}
    data = {
        "to_user_id": contact.owner_id,
        "template": action["template"],
        "variables": variables,
        "category": "transactional",
        "message_id": derived_id(run, index, "email"),
        "automation_id": run.rule_id,
        "automation_run_id": run.id,
    }
    record_event(session, "email.requested", contact.id, data)
    return _done(action)


ACTIONS: dict[str, Action] = {
    "send_template": send_template,
    "add_tag": add_tag,
    "create_task": create_task,
    "add_to_list": add_to_list,
    "notify_owner": notify_owner,
}


def perform(
    session: Session,
    settings: Settings,
    run: AutomationRun,
    contact: Contact,
    actions: list[Mapping[str, Any]],
) -> list[Outcome]:
    """Do a run's actions for its contact, in order; their outcomes."""
    return [
        ACTIONS[action["type"]](session, settings, run, contact, index, action)
        for index, action in enumerate(actions)
    ]
