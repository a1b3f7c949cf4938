"""Notices to staff: "assigned to you", for tickets, deals and leads.

- `ticket.assigned` (support): to the new assignee (`assignee_id`).
- `deal.updated`, `deal.stage_changed`, `lead.updated` (sales) whose `changed` names
  `owner_id`: to the new owner.

The address is the event's own `assignee_email` when it carries one, else the staff
replica's (`users`, kept from the gateway's `user.*` events); a user not known there yet
makes the event wait for their `user.created` (`waiting`); one inactive or without a usable
address gets no email (a log line says so). Each renders the stored
template `ticket_assigned`, `deal_assigned` or `lead_assigned` when there is one, else the
built-in text. Variables: `assignee` {id, email, name}, `recipient` {email, name}, and
`ticket` (as in `notices`), `deal` {id, name, amount, currency, status} or `lead` {id,
name, company_name, email, status, score}.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from services.notifications import waiting
from services.notifications.models import Message
from services.notifications.notices import (
    Notice,
    notice_handler,
    send_notice,
    text_of,
    ticket_variables,
)
from services.notifications.users import staff_address
from shared.bus import Handler
from shared.config import Settings
from shared.events import Envelope, canonical_uuid

log = logging.getLogger(__name__)

_GREETING_TEXT = 'Hello {{ assignee.name or "there" }},\n\n'
_GREETING_HTML = '<p>Hello {{ assignee.name or "there" }},</p>\n'

TICKET_ASSIGNED = Notice(
    name="ticket_assigned",
    subject="Assigned to you: {{ ticket.subject }} [#{{ ticket.reference }}]",
    body_text=(
        _GREETING_TEXT + 'The ticket "{{ ticket.subject }}" (priority {{ ticket.priority }}) '
        "is now assigned to you.\n\nReference: #{{ ticket.reference }}\n"
    ),
    body_html=(
        _GREETING_HTML + "<p>The ticket <strong>{{ ticket.subject }}</strong> "
        "(priority {{ ticket.priority }}) is now assigned to you.</p>\n"
        "<p>Reference: #{{ ticket.reference }}</p>\n"
    ),
)
DEAL_ASSIGNED = Notice(
    name="deal_assigned",
    subject="Deal assigned to you: {{ deal.name }}",
    body_text=(
        _GREETING_TEXT + 'The deal "{{ deal.name }}" ({{ deal.amount }} {{ deal.currency }}, '
        "{{ deal.status }}) is now yours.\n"
    ),
    body_html=(
        _GREETING_HTML + "<p>The deal <strong>{{ deal.name }}</strong> "
        "({{ deal.amount }} {{ deal.currency }}, {{ deal.status }}) is now yours.</p>\n"
    ),
)
LEAD_ASSIGNED = Notice(
    name="lead_assigned",
    subject="Lead assigned to you: {{ lead.name }}",
    body_text=(
        _GREETING_TEXT + "The lead {{ lead.name }}"
        "{% if lead.company_name %} ({{ lead.company_name }}){% endif %}, "
        "score {{ lead.score }}, is now yours.\n"
    ),
    body_html=(
        _GREETING_HTML + "<p>The lead <strong>{{ lead.name }}</strong>"
        "{% if lead.company_name %} ({{ lead.company_name }}){% endif %}, "
        "score {{ lead.score }}, is now yours.</p>\n"
    ),
)


def assignee_of(session: Session, data: Mapping[str, Any], id_field: str) -> dict[str, Any] | None:
    """{id, email, name} of the person an event assigns, or None when they can't be emailed."""
    email = text_of(data.get("assignee_email"))
    if email is not None:
        name = text_of(data.get("assignee_name"))
        return {"id": text_of(data.get(id_field)), "email": email, "name": name}
    return staff_address(session, data.get(id_field))


def _notify(
    session: Session, event: Envelope, notice: Notice, id_field: str, subject: dict[str, Any]
) -> Message | None:
    """Send `notice` to whom the event assigns, with `subject` ({"deal": {...}} and so on)."""
    assignee = assignee_of(session, event.data, id_field)
    if assignee is None:
        user_id = canonical_uuid(event.data.get(id_field))
        if not waiting.user_not_here_yet(session, event, user_id):  # else: handled again then
            log.info("%s %s: the assignee has no known address, no notice", event.type, event.id)
        return None
    recipient = {"email": assignee["email"], "name": assignee["name"]}
    variables = {**subject, "assignee": assignee, "recipient": recipient}
    return send_notice(session, event, notice, assignee["email"], variables)


def notify_ticket_assignee(session: Session, event: Envelope) -> Message | None:
    """`ticket.assigned`: tell the new assignee."""
    ticket = ticket_variables(event.data)
    return _notify(session, event, TICKET_ASSIGNED, "assignee_id", {"ticket": ticket})


def _owner_changed(data: Mapping[str, Any]) -> bool:
    changed = data.get("changed")
    return isinstance(changed, list) and "owner_id" in changed and bool(data.get("owner_id"))


def notify_new_deal_owner(session: Session, event: Envelope) -> Message | None:
    """A deal change that gave it another owner: tell the new one."""
    data = event.data
    if not _owner_changed(data):
        return None
    deal = {name: data.get(name) for name in ("name", "amount", "currency", "status")}
    deal["id"] = text_of(data.get("deal_id")) or text_of(data.get("id"))
    return _notify(session, event, DEAL_ASSIGNED, "owner_id", {"deal": deal})


def notify_new_lead_owner(session: Session, event: Envelope) -> Message | None:
    """A lead change that gave it another owner: tell the new one."""
    data = event.data
    if not _owner_changed(data):
        return None
    names = [text_of(data.get(field)) for field in ("first_name", "last_name")]
    lead = {name: data.get(name) for name in ("company_name", "email", "status", "score")}
    lead["id"] = text_of(data.get("id"))
    lead["name"] = " ".join(name for name in names if name) or lead["email"] or "(no name)"
    return _notify(session, event, LEAD_ASSIGNED, "owner_id", {"lead": lead})


def handlers(settings: Settings) -> dict[str, Handler]:
    """The ticket, deal and lead events that may assign someone."""
    return {
        "ticket.assigned": notice_handler(notify_ticket_assignee),
        "deal.updated": notice_handler(notify_new_deal_owner),
        "deal.stage_changed": notice_handler(notify_new_deal_owner),
        "lead.updated": notice_handler(notify_new_lead_owner),
    }
