"""Notices to customers on support events: acknowledgement and CSAT request.

- `ticket.created`: an acknowledgement to the requester: `data.requester.email`, else the
  ticket's `requester_email`, else the address of `data.contact_id` (the contacts
  replica). A contact not known here yet (its `contact.created` comes through another
  relay, and may come later) makes the event wait for it (`waiting`); a known contact
  without an address: skipped, with a log line.
- `ticket.resolved`: the CSAT request, with the rating link
  `{public_url}/api/v1/csat/{data.csat_token}` (no token: skipped) and one link per score
  (`...?rating=N`, 1-5): following one opens support's rating page with that score
  preselected, to confirm (a GET records nothing: mail scanners follow links). Its
  recipient as above.

Each renders the stored template named `ticket_acknowledgement` or `ticket_csat_request`
when there is one (a template that fails to render is logged and the
built-in text below is used instead), else the built-in one. Variables: `ticket` {id,
reference, subject, status, priority, channel}, `recipient` {email, name}, plus
`csat_url` and `csat_scores` [{rating, label, url}] (CSAT). Notices to staff
(assignments) are in `assignments`.

Notices are transactional. The message id is uuid5 of the event id and the notice, so an
event handled twice queues one message; an address the sender refuses is logged, and
the event is still acknowledged.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session

from services.notifications import waiting
from services.notifications.models import ContactAddress, Message
from services.notifications.sending import queue_message
from services.notifications.templates import (
    Rendered,
    TemplateProblem,
    find_template,
    render_source,
    render_template,
)
from shared.bus import Handler
from shared.config import Settings
from shared.events import Envelope, canonical_uuid
from shared.web import ApiError

log = logging.getLogger(__name__)

NOTICE_NAMESPACE = uuid.UUID("8d1f6a52-3b7e-4c0a-9f3e-5a2b7c9d1e04")
CATEGORY = "transactional"
MAX_TOKEN_CHARS = 512
# The scores a CSAT request offers, each its own one-click link (support names them alike).
CSAT_SCORES = ((1, "Very poor"), (2, "Poor"), (3, "Okay"), (4, "Good"), (5, "Excellent"))


@dataclasses.dataclass(frozen=True)
class Notice:
    """A kind of notice: the template name that overrides it, and its built-in text."""

    name: str
    subject: str
    body_text: str
    body_html: str


ACKNOWLEDGEMENT = Notice(
    name="ticket_acknowledgement",
    subject="We received your request: {{ ticket.subject }} [#{{ ticket.reference }}]",
    body_text=(
        'Hello {{ recipient.name or "there" }},\n\n'
        'Thank you for contacting us. We received your request "{{ ticket.subject }}" '
        "and will get back to you as soon as we can.\n\n"
        "Your reference: #{{ ticket.reference }}\n"
    ),
    body_html=(
        '<p>Hello {{ recipient.name or "there" }},</p>\n'
        "<p>Thank you for contacting us. We received your request "
        "<strong>{{ ticket.subject }}</strong> and will get back to you as soon as we can.</p>\n"
        "<p>Your reference: #{{ ticket.reference }}</p>\n"
    ),
)
CSAT_REQUEST = Notice(
    name="ticket_csat_request",
    subject="How did we do? {{ ticket.subject }} [#{{ ticket.reference }}]",
    body_text=(
        'Hello {{ recipient.name or "there" }},\n\n'
        'Your request "{{ ticket.subject }}" has been resolved. '
        "Would you tell us how we did? Choose a score:\n\n"
        "{% for score in csat_scores %}{{ score.rating }} - {{ score.label }}: {{ score.url }}\n"
        "{% endfor %}\n"
        "Or open the rating page: {{ csat_url }}\n\n"
        "Thank you!\n"
    ),
    body_html=(
        '<p>Hello {{ recipient.name or "there" }},</p>\n'
        "<p>Your request <strong>{{ ticket.subject }}</strong> has been resolved. "
        "Would you tell us how we did? Choose a score:</p>\n"
        "<ul>\n{% for score in csat_scores %}"
        '<li><a href="{{ score.url }}">{{ score.rating }} - {{ score.label }}</a></li>\n'
        "{% endfor %}</ul>\n"
        '<p>Or <a href="{{ csat_url }}">open the rating page</a>.</p>\n'
        "<p>Thank you!</p>\n"
    ),
)


def notice_message_id(event: Envelope, notice: Notice) -> str:
    """The id of the message a notice of an event becomes: the same event, the same id."""
    return str(uuid.uuid5(NOTICE_NAMESPACE, f"{event.id}:{notice.name}"))


def text_of(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def ticket_variables(data: Mapping[str, Any]) -> dict[str, Any]:
    """What a notice may say about its ticket."""
    ticket_id = text_of(data.get("ticket_id")) or text_of(data.get("id")) or ""
    return {
        "id": ticket_id,
        "reference": ticket_id[:8],
        "subject": text_of(data.get("subject")) or "",
        "status": text_of(data.get("status")),
        "priority": text_of(data.get("priority")),
        "channel": text_of(data.get("channel")),
    }


def requester_of(session: Session, data: Mapping[str, Any]) -> dict[str, str | None] | None:
    """The requester's {email, name}: named in the event, else the contact's; None if unknown."""
    requester = data.get("requester") if isinstance(data.get("requester"), dict) else {}
    email = text_of(requester.get("email")) or text_of(data.get("requester_email"))
    name = text_of(requester.get("name")) or text_of(data.get("requester_name"))
    contact_id = canonical_uuid(data.get("contact_id"))
    if email is None and contact_id is not None:
        address = session.get(ContactAddress, contact_id)
        if address is not None:
            email, name = text_of(address.email), name or text_of(address.name)
    return {"email": email, "name": name} if email else None


def rendered_notice(session: Session, notice: Notice, variables: dict[str, Any]) -> Rendered:
    """The notice rendered from its stored template if there is one, else the built-in."""
    template = find_template(session, notice.name)
    if template is not None:
        try:
            return dataclasses.replace(render_template(template, variables), category=CATEGORY)
        except TemplateProblem as problem:
            log.warning("template %s failed (%s): the built-in text is used", notice.name, problem)
    return render_source(notice.subject, notice.body_text, notice.body_html, variables)


def send_notice(
    session: Session,
    event: Envelope,
    notice: Notice,
    to: str,
    variables: dict[str, Any],
    contact_id: str | None = None,
) -> Message | None:
    """Queue the notice of an event (once per event); None when the sender refuses it."""
    rendered = rendered_notice(session, notice, variables)
    try:
        with session.begin_nested():  # a refused message must not take the event with it
            return queue_message(
                session,
                message_id=notice_message_id(event, notice),
                to=to,
                subject=rendered.subject,
                body_text=rendered.body_text,
                body_html=rendered.body_html,
                category=CATEGORY,
                contact_id=contact_id,
                template_id=rendered.template_id,
                cause=event,
            )
    except ApiError as error:
        log.warning("%s of event %s refused: %s", notice.name, event.id, error.errors)
        return None


def acknowledge_ticket(session: Session, event: Envelope) -> Message | None:
    """`ticket.created`: tell the requester their request arrived."""
    recipient = requester_of(session, event.data)
    contact_id = canonical_uuid(event.data.get("contact_id"))
    if recipient is None:
        if not waiting.contact_not_here_yet(session, event, contact_id):
            log.info("ticket.created %s: no requester address, no acknowledgement", event.id)
        return None
    variables = {"ticket": ticket_variables(event.data), "recipient": recipient}
    return send_notice(session, event, ACKNOWLEDGEMENT, recipient["email"], variables, contact_id)


def request_csat(session: Session, event: Envelope, *, public_url: str) -> Message | None:
    """`ticket.resolved`: ask the requester to rate the help, with the signed rating link."""
    token = text_of(event.data.get("csat_token"))
    recipient = requester_of(session, event.data)
    contact_id = canonical_uuid(event.data.get("contact_id"))
    usable = token is not None and len(token) <= MAX_TOKEN_CHARS
    if usable and recipient is None and waiting.contact_not_here_yet(session, event, contact_id):
        return None
    if not usable or recipient is None:
        log.info("ticket.resolved %s: no rating link or no address, no CSAT request", event.id)
        return None
    csat_url = f"{public_url.rstrip('/')}/api/v1/csat/{quote(token, safe='')}"
    variables = {
        "ticket": ticket_variables(event.data),
        "recipient": recipient,
        "csat_url": csat_url,
        "csat_scores": [
            {"rating": rating, "label": label, "url": f"{csat_url}?rating={rating}"}
            for rating, label in CSAT_SCORES
        ],
    }
    return send_notice(session, event, CSAT_REQUEST, recipient["email"], variables, contact_id)


def notice_handler(send: Callable[[Session, Envelope], Message | None]) -> Handler:
    def handle(session: Session, event: Envelope) -> None:
        send(session, event)

    handle.__name__ = handle.__qualname__ = send.__name__
    return handle


def handlers(settings: Settings) -> dict[str, Handler]:
    """The support events that send notices."""
    public_url = str(settings.extra["public_url"])

    def request_csat_with_link(session: Session, event: Envelope) -> Message | None:
        return request_csat(session, event, public_url=public_url)

    return {
        "ticket.created": notice_handler(acknowledge_ticket),
        "ticket.resolved": notice_handler(request_csat_with_link),
    }
