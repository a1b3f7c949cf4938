"""Events that ask for mail or shape who it reaches.

- `email.requested` (any service): data `to`, `to_user_id` (a staff user: the address comes
  from the user replica) or `contact_id` (the address then comes from the contact replica),
  `subject`/`body_text`/`body_html` or `template` (an id or a name) with `variables`, and
  optionally `message_id`, `category`, `campaign_id`, `headers`, `from_address` (the sender:
  `news@shop.example` or `Shop <news@shop.example>`; default CRM_MAIL_FROM). The message is
  queued once per message id (derived from the event and the address when none is given).
  A request that can never be sent (no address, bad fields, a template that fails) is a
  PermanentError: it goes to the dead-letter queue with the reason; a request to a contact
  not known here yet waits for its `contact.created` (`waiting`). A request for a staff
  user who is unknown, inactive or without an address is skipped (logged): there is no one
  to tell. A redacted request (its contact was erased before it was published) is skipped.
- `contact.created|updated|merged`: the replica of each contact's address and name
  (`ContactAddress`), applied only when the event's `aggregate_version` is newer.
- `contact.merged`: the duplicate's messages now belong to the survivor.
- `contact.erased`: nothing about the person stays: their address replica is deleted and
  their messages keep only delivery facts (no address, subject, bodies, headers, clicks).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from services.notifications import waiting
from services.notifications.mime import address_problem
from services.notifications.models import Click, ContactAddress, Message, TrackedLink
from services.notifications.sending import queue_message
from services.notifications.templates import Rendered, render
from services.notifications.users import staff_address
from services.notifications.webhooks import erase_deliveries_about
from shared.bus import Handler, PermanentError
from shared.config import Settings
from shared.contact_events import contact_id_of, erased_contact_ids
from shared.events import Envelope, canonical_uuid, utcnow
from shared.idempotency import forget_resource
from shared.outbox import redact_aggregate
from shared.web import ApiError

log = logging.getLogger(__name__)

ERASED_SUBJECT = "(erased)"
TEXT_FIELDS = (
    "to",
    "subject",
    "body_text",
    "body_html",
    "template",
    "category",
    "message_id",
    "from_address",
)


def _problem(error: ApiError) -> str:
    return f"{error.detail or error.title}: {error.errors}" if error.errors else str(error)


# --- email.requested ------------------------------------------------------------------------


def on_email_requested(session: Session, event: Envelope) -> None:
    """Queue the requested email (once per message id)."""
    data = event.data
    if data.get("redacted"):  # about a person erased before it was published: no one
        return
    _check_shape(data)
    if data.get("message_id") and _known(session, data["message_id"]):
        return  # asked for again (a new event naming the same message): already ours
    if _contact_not_here_yet(session, event):
        return  # handled again when the contact's address arrives (`waiting`)
    to = _recipient(session, data)
    if to is None:
        log.warning(
            "email.requested %s: user %s has no address; skipped", event.id, data.get("to_user_id")
        )
        return
    content = _content(session, data, to)
    try:
        queue_message(
            session,
            message_id=data.get("message_id"),
            to=to,
            subject=content.subject,
            body_text=content.body_text,
            body_html=content.body_html,
            category=data.get("category") or content.category,
            contact_id=data.get("contact_id"),
            campaign_id=data.get("campaign_id"),
            template_id=content.template_id,
            cause=event,
            headers=data.get("headers"),
            from_address=data.get("from_address"),
        )
    except ApiError as error:
        raise PermanentError(f"email.requested refused: {_problem(error)}") from error


def _check_shape(data: Mapping[str, Any]) -> None:
    wrong = [name for name in TEXT_FIELDS if data.get(name) is not None]
    wrong = [name for name in wrong if not isinstance(data[name], str)]
    if data.get("variables") is not None and not isinstance(data["variables"], Mapping):
        wrong.append("variables")
    if data.get("headers") is not None and not isinstance(data["headers"], Mapping):
        wrong.append("headers")
    if wrong:
        raise PermanentError(f"email.requested has fields of the wrong type: {', '.join(wrong)}")


def _contact_not_here_yet(session: Session, event: Envelope) -> bool:
    """Whether the request is to a contact this replica does not hold yet; it then waits."""
    data = event.data
    if data.get("to") or data.get("to_user_id") is not None or data.get("contact_id") is None:
        return False
    contact_id = contact_id_of(data["contact_id"], "contact_id")
    return waiting.contact_not_here_yet(session, event, contact_id)


def _known(session: Session, message_id: str) -> bool:
    try:
        return session.get(Message, str(uuid.UUID(message_id))) is not None
    except ValueError:
        return False  # queue_message says what is wrong with it


def _recipient(session: Session, data: Mapping[str, Any]) -> str | None:
    """The address: `to`, else the staff user's, else the contact's (None: a user without)."""
    if data.get("to"):
        return data["to"]
    if data.get("to_user_id") is not None:
        if canonical_uuid(data["to_user_id"]) is None:
            raise PermanentError("to_user_id must be a user id (a UUID string)")
        user = staff_address(session, data["to_user_id"])
        return user["email"] if user else None
    if data.get("contact_id") is None:
        raise PermanentError("email.requested needs data.to or data.contact_id")
    contact_id = contact_id_of(data["contact_id"], "contact_id")
    address = session.get(ContactAddress, contact_id)
    if address is None or not address.email:
        raise PermanentError(f"no email address is known for contact {contact_id}")
    return address.email


def _content(session: Session, data: Mapping[str, Any], to: str) -> Rendered:
    """The subject and bodies: given, or rendered from a template."""
    if not data.get("template"):
        return Rendered(
            subject=data.get("subject") or "",
            body_text=data.get("body_text") or "",
            body_html=data.get("body_html"),
            category=data.get("category") or "transactional",
        )
    variables = dict(data.get("variables") or {})
    variables.setdefault("contact", _contact_variables(session, data.get("contact_id"), to))
    try:
        return render(session, data["template"], variables)
    except ApiError as error:  # unknown template (404), missing variable or bad one (422)
        raise PermanentError(f"template {data['template']!r}: {_problem(error)}") from error


def _contact_variables(session: Session, contact_id: Any, to: str) -> dict[str, Any]:
    """`contact` for templates: the recipient's name and address, as far as known."""
    address = None
    if isinstance(contact_id, str):
        address = session.get(ContactAddress, contact_id_of(contact_id, "contact_id"))
    return {"name": address.name if address else None, "email": to}


# --- the contact replica --------------------------------------------------------------------


def on_contact_changed(session: Session, event: Envelope) -> None:
    """Keep a contact's address and name, if this event is newer than what is held."""
    data = event.data
    if data.get("redacted"):  # an erased person's event: it names no one
        return
    contact_id = contact_id_of(data.get("id", event.aggregate_id), "id")
    version = event.aggregate_version
    if version is None and isinstance(data.get("version"), int):
        version = data["version"]
    row = session.get(ContactAddress, contact_id, with_for_update=True)
    if row is not None and (version is None or version <= row.version):
        return  # stale or unordered: what is held is as new or newer
    if row is None:
        row = ContactAddress(contact_id=contact_id, version=0)
        session.add(row)
    if "email" in data:
        row.email = _usable_email(data["email"], contact_id)
    if "first_name" in data or "last_name" in data:
        row.name = _name(data.get("first_name"), data.get("last_name"))
    row.version = version or row.version
    row.updated_at = utcnow()


def _usable_email(value: Any, contact_id: str) -> str | None:
    if value is None or value == "":
        return None
    email = value.strip() if isinstance(value, str) else value
    if address_problem(email) is not None:
        log.warning("contact %s has an address mail cannot go to; none kept", contact_id)
        return None
    return email


def _name(first: Any, last: Any) -> str | None:
    parts = [part.strip() for part in (first, last) if isinstance(part, str) and part.strip()]
    return " ".join(parts)[:200] or None


def on_contact_merged(session: Session, event: Envelope) -> None:
    """A duplicate folded into a contact: its messages follow, its address replica goes."""
    data = event.data
    if "duplicate_id" not in data:
        raise PermanentError("contact.merged needs id and duplicate_id")
    survivor = contact_id_of(data.get("id", event.aggregate_id), "id")
    duplicate = contact_id_of(data["duplicate_id"], "duplicate_id")
    if survivor == duplicate:
        return
    session.execute(
        update(Message)
        .where(Message.contact_id == duplicate)
        .values(contact_id=survivor, version=Message.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(ContactAddress).where(ContactAddress.contact_id == duplicate))
    on_contact_changed(session, event)  # the event carries the survivor as it is now


def on_contact_erased(session: Session, event: Envelope) -> None:
    """Right to be forgotten: no address, subject, body or link of the person stays."""
    ids = erased_contact_ids(event)
    addresses = session.scalars(select(ContactAddress).where(ContactAddress.contact_id.in_(ids)))
    keys = {address.email.lower() for address in addresses if address.email}
    session.execute(delete(ContactAddress).where(ContactAddress.contact_id.in_(ids)))
    theirs = or_(Message.contact_id.in_(ids), Message.to_key.in_(keys))
    messages = list(session.scalars(select(Message).where(theirs).with_for_update()))
    if messages:
        _erase_messages(session, messages)
    deliveries = erase_deliveries_about(session, [*ids, *keys])
    log.info(
        "erased %d contact(s): %d message(s) anonymised, %d webhook deliveries deleted",
        len(ids),
        len(messages),
        deliveries,
    )


def _erase_messages(session: Session, messages: list[Message]) -> None:
    now = utcnow()
    ids = [message.id for message in messages]
    session.execute(delete(Click).where(Click.message_id.in_(ids)))
    session.execute(delete(TrackedLink).where(TrackedLink.message_id.in_(ids)))  # no redirect
    for message in messages:
        if message.status == "queued":  # never to be sent now: there is no one to send it to
            message.status, message.failed_at = "failed", now
        message.to_address = message.to_key = ""
        message.subject, message.body_text, message.body_html = ERASED_SUBJECT, "", None
        message.headers, message.last_error, message.contact_id = {}, None, None
        message.version += 1
        message.updated_at = now
        redact_aggregate(session, message.id, keep={"message_id": message.id})
        forget_resource(session, message.id)


def handlers(settings: Settings) -> dict[str, Handler]:
    """The events this part consumes, with their handlers."""
    return {
        "email.requested": on_email_requested,
        "contact.created": on_contact_changed,
        "contact.updated": on_contact_changed,
        "contact.merged": on_contact_merged,
        "contact.erased": on_contact_erased,
    }
