"""Subscriptions to mailing lists: their statuses, double opt-in, unsubscribing by link.

- One `Subscription` per (contact, list): subscribed, unsubscribed, or pending (awaiting
  the confirmation of a double opt-in). The API changes only contacts the replica knows
  with an address.
- Subscribing to a list with `double_opt_in` (or when asked) makes the row pending and
  records `email.requested` (transactional) with a signed confirmation link; following
  it subscribes (source double_opt_in) and lifts an "unsubscribed" suppression of the
  address. An address suppressed as "unsubscribed" always goes through double opt-in
  (only the person's own confirmation outweighs their unsubscription); one suppressed
  for any other reason cannot be subscribed (409).
- Every status change appends a ledger line and records `subscription.changed` in the
  outbox, in the same transaction; asking for the status a row has changes nothing.
- Unsubscribing from every list (a link's "all") unsubscribes each open row of the
  contact and suppresses the address as "unsubscribed"; one more event, with list_id
  null and all_lists true, says so.

`subscription.changed` data: contact_id, email (lower-cased), subscription_id, list_id,
list (its name), status, previous_status, source, double_opt_in (true when confirmed by
the link), all_lists, occurred_at. Its aggregate is the subscription (version: the row's),
or the contact for the all-lists event (subscription_id, list_id and list null).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.marketing import suppressions
from services.marketing.ledger import Origin, record_consent
from services.marketing.models import Contact, Subscription, SubscriptionList, new_id
from services.marketing.unsubscribe import ConfirmationClaim, UnsubscribeClaim, confirm_url
from shared.config import Settings
from shared.db import take_write_lock
from shared.events import isoformat, utcnow
from shared.outbox import record_event
from shared.web import ApiError, conflict, invalid

SUBSCRIBED, UNSUBSCRIBED, PENDING = "subscribed", "unsubscribed", "pending"
STATUSES = (SUBSCRIBED, UNSUBSCRIBED, PENDING)
OPEN_STATUSES = (SUBSCRIBED, PENDING)
# Sources a client may name; the others are set by the service itself.
API_SOURCES = ("api", "form", "import", "manual", "phone", "event")
DOUBLE_OPT_IN, UNSUBSCRIBE_LINK = "double_opt_in", "unsubscribe_link"
DEFAULT_LIST = "newsletter"


# --- lists and contacts -------------------------------------------------------------------


def _list_named(session: Session, name: str) -> SubscriptionList | None:
    return session.scalars(select(SubscriptionList).where(SubscriptionList.name == name)).first()


def default_list(session: Session) -> SubscriptionList:
    """The "newsletter" list (single opt-in), made on first use."""
    found = _list_named(session, DEFAULT_LIST)
    if found is not None:
        return found
    sub_list = SubscriptionList(id=new_id(), name=DEFAULT_LIST, description="The newsletter")
    try:
        with session.begin_nested():
            session.add(sub_list)
        return sub_list
    except IntegrityError:  # made meanwhile by another transaction
        made = _list_named(session, DEFAULT_LIST)
        assert made is not None
        return made


def contact_with_address(session: Session, contact_id: str) -> Contact:
    """The replica's contact with an address; else a 422 naming `contact_id`."""
    contact = session.get(Contact, contact_id)
    if contact is None or contact.erased or not contact.email_key:
        raise invalid({"contact_id": ["No contact with an email address is known by this id."]})
    return contact


# --- status changes -----------------------------------------------------------------------


def _event_data(
    row: Subscription | None,
    sub_list: SubscriptionList | None,
    contact_id: str,
    email: str,
    change: tuple[str, str | None, str],
    when: datetime,
    *,
    double_opt_in: bool = False,
) -> dict[str, Any]:
    """The data of `subscription.changed`; `change` is (status, previous status, source)."""
    status, previous, source = change
    return {
        "contact_id": contact_id,
        "email": suppressions.email_key(email),
        "subscription_id": row.id if row is not None else None,
        "list_id": sub_list.id if sub_list is not None else None,
        "list": sub_list.name if sub_list is not None else None,
        "status": status,
        "previous_status": previous,
        "source": source,
        "double_opt_in": double_opt_in,
        "all_lists": sub_list is None,
        "occurred_at": isoformat(when),
    }


def _row_for(session: Session, contact_id: str, sub_list: SubscriptionList) -> Subscription:
    """The contact's row for a list, locked; a new one (version 0) when there is none."""
    statement = (
        select(Subscription)
        .where(Subscription.contact_id == contact_id, Subscription.list_id == sub_list.id)
        .with_for_update()
    )
    row = session.scalars(statement).first()
    if row is not None:
        return row
    now = utcnow()
    row = Subscription(
        id=new_id(),
        contact_id=contact_id,
        list_id=sub_list.id,
        status="",
        source="",
        version=0,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
        return row
    except IntegrityError:  # made meanwhile by another transaction
        return session.scalars(statement.execution_options(populate_existing=True)).one()


def _set_status(
    session: Session,
    row: Subscription,
    sub_list: SubscriptionList,
    status: str,
    origin: Origin,
    email: str,
    *,
    double_opt_in: bool = False,
) -> bool:
    """Move a row to `status`, with its ledger line and event; False when it is there."""
    if row.status == status:
        return False
    previous, now = row.status or None, utcnow()
    row.status, row.source, row.updated_at = status, origin.source, now
    row.consented_at = now if status == SUBSCRIBED else None
    if status != PENDING:
        row.confirmation_nonce = None
    row.version += 1
    session.flush()
    record_consent(
        session,
        contact_id=row.contact_id,
        email=email,
        sub_list=sub_list,
        action=status,
        origin=origin,
        when=now,
    )
    change = (status, previous, origin.source)
    data = _event_data(
        row, sub_list, row.contact_id, email, change, now, double_opt_in=double_opt_in
    )
    record_event(session, "subscription.changed", row.id, data, aggregate_version=row.version)
    return True


def subscribe(
    session: Session,
    settings: Settings,
    contact: Contact,
    sub_list: SubscriptionList,
    origin: Origin,
    *,
    double_opt_in: bool | None = None,
) -> tuple[Subscription, bool]:
    """Subscribe a contact to a list, or make it pending and mail the confirmation link
    when double opt-in applies; the row and whether it is new. 409 for a suppressed address
    (unless it is suppressed as unsubscribed: then double opt-in applies)."""
    assert contact.email_key is not None
    take_write_lock(session)
    held = suppressions.suppression_of(session, contact.email_key)
    if held is not None and held.reason != suppressions.UNSUBSCRIBED:
        raise conflict(
            f"The contact's address is suppressed ({held.reason}): it cannot be subscribed",
            {"contact_id": [f"The contact's address is suppressed ({held.reason})."]},
        )
    confirm = sub_list.double_opt_in or bool(double_opt_in) or held is not None
    row = _row_for(session, contact.id, sub_list)
    created = row.version == 0
    if row.status == SUBSCRIBED:
        return row, created
    if not confirm:
        _set_status(session, row, sub_list, SUBSCRIBED, origin, contact.email_key)
        return row, created
    _set_status(session, row, sub_list, PENDING, origin, contact.email_key)
    request_confirmation(session, settings, row, sub_list, contact)
    return row, created


def unsubscribe(
    session: Session, contact_id: str, email: str, sub_list: SubscriptionList, origin: Origin
) -> tuple[Subscription, bool]:
    """Unsubscribe a contact from one list; the row and whether it is new."""
    take_write_lock(session)
    row = _row_for(session, contact_id, sub_list)
    created = row.version == 0
    _set_status(session, row, sub_list, UNSUBSCRIBED, origin, email)
    return row, created


def open_rows(session: Session, contact_ids: Iterable[str]) -> list[Subscription]:
    """The subscribed or pending rows of these contacts, locked."""
    ids = sorted(set(contact_ids))
    if not ids:
        return []
    return list(
        session.scalars(
            select(Subscription)
            .where(Subscription.contact_id.in_(ids), Subscription.status.in_(OPEN_STATUSES))
            .order_by(Subscription.id)
            .with_for_update()
        )
    )


def unsubscribe_rows(
    session: Session, rows: list[Subscription], email: str, origin: Origin
) -> None:
    """Unsubscribe each of these rows (a ledger line and an event each)."""
    for row in rows:
        sub_list = session.get(SubscriptionList, row.list_id)
        assert sub_list is not None  # a list's rows go with it
        _set_status(session, row, sub_list, UNSUBSCRIBED, origin, email)


def unsubscribe_everywhere(session: Session, contact_id: str, email: str, origin: Origin) -> bool:
    """Unsubscribe a contact from every list and suppress the address; whether it changed."""
    take_write_lock(session)
    rows = open_rows(session, [contact_id])
    unsubscribe_rows(session, rows, email, origin)
    now = utcnow()
    if not suppressions.suppress(
        session, email, suppressions.UNSUBSCRIBED, origin, contact_id=contact_id, since=now
    ):
        return bool(rows)
    change = (UNSUBSCRIBED, None, origin.source)
    data = _event_data(None, None, contact_id, email, change, now)
    record_event(session, "subscription.changed", contact_id, data)
    return True


# --- public links -------------------------------------------------------------------------


def request_confirmation(
    session: Session,
    settings: Settings,
    row: Subscription,
    sub_list: SubscriptionList,
    contact: Contact,
) -> None:
    """Mail the contact a link confirming the subscription (earlier links stop working)."""
    assert contact.email is not None
    row.confirmation_nonce = str(uuid.uuid4())
    link = confirm_url(settings, row.id, row.confirmation_nonce, contact.email)
    greeting = f"Hello {contact.first_name}," if contact.first_name else "Hello,"
    body = (
        f"{greeting}\n\nPlease confirm that you want to receive {sub_list.name} from us by "
        f"following this link:\n\n{link}\n\nIf you did not ask for this, ignore this "
        "message: you will not be subscribed.\n"
    )
    data = {
        "to": contact.email,
        "contact_id": contact.id,
        "category": "transactional",
        "subject": f"Please confirm your subscription to {sub_list.name}",
        "body_text": body,
    }
    record_event(session, "email.requested", row.id, data)


def _invalid_link() -> ApiError:
    return ApiError(404, "Not Found", "This link is not valid or has expired")


def confirmation_offer(
    session: Session, claim: ConfirmationClaim, *, for_update: bool = False
) -> tuple[Subscription, SubscriptionList]:
    """The subscription a confirmation link would confirm, changing nothing; 404 when void."""
    query = select(Subscription).where(Subscription.id == claim.subscription_id)
    row = session.scalars(query.with_for_update() if for_update else query).first()
    if row is None:
        raise _invalid_link()
    sub_list = session.get(SubscriptionList, row.list_id)
    assert sub_list is not None
    if row.status != SUBSCRIBED and (
        row.status != PENDING or row.confirmation_nonce != claim.nonce
    ):
        raise _invalid_link()
    return row, sub_list


def confirm(
    session: Session, claim: ConfirmationClaim, origin: Origin
) -> tuple[Subscription, SubscriptionList]:
    """Subscribe through a confirmation link (again: no change); 404 when it is void."""
    take_write_lock(session)
    row, sub_list = confirmation_offer(session, claim, for_update=True)
    if row.status == SUBSCRIBED:
        return row, sub_list
    email = claim.email_key
    _set_status(session, row, sub_list, SUBSCRIBED, origin, email, double_opt_in=True)
    suppressions.lift_unsubscription(session, email, origin)
    return row, sub_list


def link_offer(session: Session, claim: UnsubscribeClaim, *, everything: bool) -> dict[str, Any]:
    """What an unsubscribe link would do (its list's name, or every list), changing nothing."""
    everything = everything or claim.list_id is None
    sub_list = None if everything else session.get(SubscriptionList, claim.list_id)
    return {"list": sub_list.name if sub_list is not None else None, "all_lists": everything}


def unsubscribe_by_link(
    session: Session, claim: UnsubscribeClaim, origin: Origin, *, everything: bool = False
) -> dict[str, Any]:
    """Do what an unsubscribe link asks, for its own contact only; what to tell the person."""
    everything = everything or claim.list_id is None
    sub_list = None if everything else session.get(SubscriptionList, claim.list_id)
    answer = {"status": UNSUBSCRIBED, **link_offer(session, claim, everything=everything)}
    contact = session.get(Contact, claim.contact_id)
    if contact is not None and contact.erased:
        return answer  # forgotten: kept suppressed already, and nothing to write about them
    if everything:
        unsubscribe_everywhere(session, claim.contact_id, claim.email_key, origin)
    elif sub_list is not None:  # a list deleted since the mail was sent mails no one
        unsubscribe(session, claim.contact_id, claim.email_key, sub_list, origin)
    return answer
