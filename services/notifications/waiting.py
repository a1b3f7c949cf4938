"""Events that wait for another aggregate's data, handled again when it arrives.

Events from two services come through two relays, in either order: `ticket.created` for a
contact may arrive before the `contact.created` that tells us the contact's address, and
`ticket.assigned` to a new agent before the gateway's `user.created`. A handler that needs
data not here yet does not drop its work: it `wait_for`s it, which keeps the event (a
`PendingEvent`, in the consumer's transaction) keyed by what it waits for. The handler of
the event bringing that data (`contact.created|updated|merged`, `user.created|updated`)
runs as usual, then every event waiting for that contact or user is handled again by its
own handler, in the same transaction (`resuming` wraps the handler table once, in
`handlers`). A handler that still lacks the data waits again.

Waiting is bounded: an event not completed within MAX_WAIT is dropped with a log line (an
acknowledgement days late would confuse more than help), and an erased contact's or deleted
user's waiting events go with them (`contact.erased`, `user.deleted`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.notifications.models import ContactAddress, PendingEvent, UserAddress
from shared.bus import Handler, PermanentError
from shared.contact_events import erased_contact_ids
from shared.events import Envelope, canonical_uuid, parse_envelope, utcnow

log = logging.getLogger(__name__)

MAX_WAIT = timedelta(hours=24)
CONTACT, USER = "contact", "user"
# The events that bring an aggregate's data (its id in `data.id`), and what waits for them.
BRINGERS = {
    "contact.created": CONTACT,
    "contact.updated": CONTACT,
    "contact.merged": CONTACT,
    "user.created": USER,
    "user.updated": USER,
}


def contact_not_here_yet(session: Session, event: Envelope, contact_id: str | None) -> bool:
    """Whether `contact_id` is unknown here (its `contact.created` still on the way); if so,
    `event` waits for it."""
    if contact_id is None or session.get(ContactAddress, contact_id) is not None:
        return False
    wait_for(session, event, CONTACT, contact_id)
    return True


def user_not_here_yet(session: Session, event: Envelope, user_id: str | None) -> bool:
    """Whether staff user `user_id` is unknown here (its `user.created` still on the way); if
    so, `event` waits for it."""
    if user_id is None or session.get(UserAddress, user_id) is not None:
        return False
    wait_for(session, event, USER, user_id)
    return True


def wait_for(session: Session, event: Envelope, waits_for: str, key: str) -> None:
    """Keep `event` until `waits_for` `key` arrives; then its handler runs again."""
    now = utcnow()
    session.execute(delete(PendingEvent).where(PendingEvent.created_at < now - MAX_WAIT))
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    row = {
        "event_id": event.id,
        "waits_for": waits_for,
        "key": key,
        "envelope": event.to_json(),
        "created_at": now,
    }
    statement = dialect.insert(PendingEvent).values(row)
    session.execute(statement.on_conflict_do_nothing(index_elements=["event_id"]))
    log.info("%s %s waits for %s %s", event.type, event.id, waits_for, key)


def resume(session: Session, waits_for: str, key: str, table: Mapping[str, Handler]) -> int:
    """Handle again the events waiting for `key`; how many were handled."""
    rows = list(
        session.scalars(
            select(PendingEvent)
            .where(PendingEvent.waits_for == waits_for, PendingEvent.key == key)
            .order_by(PendingEvent.created_at)
            .with_for_update()
        )
    )
    oldest = utcnow() - MAX_WAIT
    for row in rows:
        session.delete(row)
        session.flush()  # gone before its handler runs: one that waits again adds it back
        event = parse_envelope(row.envelope.encode())
        created = (
            row.created_at
            if row.created_at.tzinfo
            else row.created_at.replace(tzinfo=oldest.tzinfo)
        )
        if created < oldest:
            log.warning(
                "%s %s waited too long for %s %s; dropped", event.type, event.id, waits_for, key
            )
            continue
        try:
            with session.begin_nested():  # one that fails must not take the arriving event along
                table[event.type](session, event)
        except PermanentError as error:
            log.warning("%s %s, handled again, failed for good: %s", event.type, event.id, error)
    return len(rows)


def forget(session: Session, waits_for: str, keys: list[str]) -> None:
    """Drop what waits for these (erased) keys."""
    session.execute(
        delete(PendingEvent).where(PendingEvent.waits_for == waits_for, PendingEvent.key.in_(keys))
    )


def _then_resume(handler: Handler, waits_for: str, table: Mapping[str, Handler]) -> Handler:
    def handle(session: Session, event: Envelope) -> None:
        handler(session, event)
        key = canonical_uuid(event.data.get("id", event.aggregate_id))
        if key is not None and not event.data.get("redacted"):
            resume(session, waits_for, key, table)

    handle.__name__ = handle.__qualname__ = getattr(handler, "__name__", "handle")
    return handle


def _then_forget(handler: Handler, waits_for: str) -> Handler:
    def handle(session: Session, event: Envelope) -> None:
        handler(session, event)
        if waits_for == CONTACT:
            forget(session, CONTACT, erased_contact_ids(event))
        elif (key := canonical_uuid(event.data.get("id", event.aggregate_id))) is not None:
            forget(session, waits_for, [key])

    handle.__name__ = handle.__qualname__ = getattr(handler, "__name__", "handle")
    return handle


def resuming(table: dict[str, Handler]) -> dict[str, Handler]:
    """The handler table, with the events that bring data resuming what waits for it."""
    wrapped: dict[str, Handler] = dict(table)
    for event_type, waits_for in BRINGERS.items():
        if event_type in table:
            wrapped[event_type] = _then_resume(table[event_type], waits_for, wrapped)
    for event_type, waits_for in (("contact.erased", CONTACT), ("user.deleted", USER)):
        if event_type in table:
            wrapped[event_type] = _then_forget(table[event_type], waits_for)
    return wrapped
