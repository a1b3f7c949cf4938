"""Campaign statistics from notifications' and consent events.

`email.sent`, `email.opened`, `email.clicked`, `email.bounced`, `email.failed` (data:
message_id, campaign_id, contact_id, as notifications publishes them) find the recipient by
campaign and contact; the message id, uuid5(campaign_id, contact_id), confirms it, or finds
the recipient among the campaign's erased or merged contacts when notifications names the
contact merged into or none. Each sets the moment of its outcome once:
`sent_at`, `opened_at`, `clicked_at`, `bounced_at`, `failed_at`. Only the UPDATE that sets
it (`... WHERE opened_at IS NULL`) adds one to the campaign's counter, so an event
delivered twice, a second open or a tenth click of one recipient counts once. An open or
click also proves delivery: it sets `sent_at` if `email.sent` has not arrived yet (events
may come out of order). A recipient's status follows its outcome (sent, then failed or
bounced). Events without a campaign_id (transactional mail), of unknown campaigns or of
contacts who were not recipients are ignored; a campaign_id, message_id or contact_id
that is not a UUID is a PermanentError.

Unsubscribes (`subscription.changed` with status unsubscribed, data contact_id, list_id,
all_lists, source): counted once for the most recent campaign requested for that contact
within the 30 days before the change whose list is the one left (a campaign without
list_id stands for the default list; an all-lists unsubscribe matches any campaign). A
change made by a bounce or an import is not the person's answer to a campaign and is not
counted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import InstrumentedAttribute

from services.marketing.campaigns import message_id_for
from services.marketing.contact_data import optional_uuid
from services.marketing.models import Campaign, CampaignRecipient, Contact, SubscriptionList
from services.marketing.subscriptions import DEFAULT_LIST, UNSUBSCRIBED
from shared.bus import Handler, PermanentError
from shared.config import Settings
from shared.events import Envelope

ATTRIBUTION_WINDOW = timedelta(days=30)
NOT_A_CHOICE = frozenset({"bounce", "import"})
# Statuses an outcome may replace: a later `email.sent` never undoes a bounce.
BEFORE = {
    "sent": ("pending", "requested"),
    "failed": ("pending", "requested", "sent"),
    "bounced": ("pending", "requested", "sent", "failed"),
}
R = CampaignRecipient


def _recipient_key(session: Session, event: Envelope) -> tuple[str, str] | None:
    """(campaign_id, contact_id) of the recipient the event is about, or None."""
    data = event.data
    campaign_id = optional_uuid(data.get("campaign_id"), "campaign_id")
    if campaign_id is None:
        return None  # not campaign mail
    message_id = optional_uuid(data.get("message_id"), "message_id")
    contact_id = optional_uuid(data.get("contact_id"), "contact_id")
    if contact_id is not None and message_id in (None, message_id_for(campaign_id, contact_id)):
        found = session.scalar(
            select(R.contact_id).where(R.campaign_id == campaign_id, R.contact_id == contact_id)
        )
        return (campaign_id, found) if found is not None else None
    if message_id is None:
        return None
    # The message names another contact (ours was merged into it) or none (erased): find
    # which of the campaign's recipients that are tombstones now it was sent to.
    gone = session.scalars(
        select(R.contact_id)
        .join(Contact, Contact.id == R.contact_id)
        .where(
            R.campaign_id == campaign_id,
            or_(Contact.erased.is_(True), Contact.merged_into.is_not(None)),
        )
    )
    for candidate in gone:
        if message_id_for(campaign_id, candidate) == message_id:
            return campaign_id, candidate
    return None


def _set_once(
    session: Session, key: tuple[str, str], column: InstrumentedAttribute[Any], when: datetime
) -> bool:
    """Set a recipient's moment if not set yet; whether this call set it."""
    campaign_id, contact_id = key
    return bool(
        session.execute(
            update(R)
            .where(R.campaign_id == campaign_id, R.contact_id == contact_id, column.is_(None))
            .values({column.key: when})
            .execution_options(synchronize_session=False)
        ).rowcount
    )


def _count(session: Session, campaign_id: str, counter: InstrumentedAttribute[int]) -> None:
    session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id)
        .values({counter.key: counter + 1})
        .execution_options(synchronize_session=False)
    )


def _move_status(session: Session, key: tuple[str, str], status: str) -> None:
    session.execute(
        update(R)
        .where(R.campaign_id == key[0], R.contact_id == key[1], R.status.in_(BEFORE[status]))
        .values(status=status)
        .execution_options(synchronize_session=False)
    )


def _outcome(
    column: InstrumentedAttribute[Any],
    counter: InstrumentedAttribute[int],
    status: str | None,
) -> Handler:
    """A handler setting `column` once per recipient and counting it into `counter`."""

    def handle(session: Session, event: Envelope) -> None:
        key = _recipient_key(session, event)
        if key is None:
            return
        when = event.occurred_at
        if status is None and _set_once(session, key, R.sent_at, when):
            _count(session, key[0], Campaign.sent_count)  # an open or click proves delivery
            _move_status(session, key, "sent")
        if _set_once(session, key, column, when):
            _count(session, key[0], counter)
        if status is not None:
            _move_status(session, key, status)

    handle.__name__ = handle.__qualname__ = f"count_{column.key}"
    return handle


# --- unsubscribes ---------------------------------------------------------------------------


def _list_matches(session: Session, list_id: str | None, all_lists: bool) -> Any:
    """SQL on campaigns: sent for the list the person left (any, for all lists)."""
    if all_lists:
        return Campaign.id.is_not(None)
    default = session.scalar(
        select(SubscriptionList.id).where(SubscriptionList.name == DEFAULT_LIST)
    )
    if list_id is not None and list_id == default:
        return or_(Campaign.list_id == list_id, Campaign.list_id.is_(None))
    return Campaign.list_id == list_id


def on_subscription_changed(session: Session, event: Envelope) -> None:
    """Count an unsubscribe for the campaign that most likely caused it (see above)."""
    data = event.data
    if data.get("status") != UNSUBSCRIBED or data.get("source") in NOT_A_CHOICE:
        return
    contact_id = optional_uuid(data.get("contact_id"), "contact_id")
    list_id = optional_uuid(data.get("list_id"), "list_id")
    if contact_id is None:
        raise PermanentError("subscription.changed needs data.contact_id")
    all_lists = data.get("all_lists") is True or list_id is None
    when = event.occurred_at
    latest = session.execute(
        select(R.campaign_id, R.contact_id)
        .join(Campaign, Campaign.id == R.campaign_id)
        .where(
            R.contact_id == contact_id,
            R.requested_at.is_not(None),
            R.requested_at >= when - ATTRIBUTION_WINDOW,
            R.requested_at <= when,
            _list_matches(session, list_id, all_lists),
        )
        .order_by(R.requested_at.desc(), R.campaign_id)
        .limit(1)
    ).first()
    if latest is None:
        return
    key = (latest.campaign_id, latest.contact_id)
    if _set_once(session, key, R.unsubscribed_at, when):
        _count(session, key[0], Campaign.unsubscribed_count)


OUTCOMES: dict[str, Callable[[], Handler]] = {
    "email.sent": lambda: _outcome(R.sent_at, Campaign.sent_count, "sent"),
    "email.opened": lambda: _outcome(R.opened_at, Campaign.opened_count, None),
    "email.clicked": lambda: _outcome(R.clicked_at, Campaign.clicked_count, None),
    "email.bounced": lambda: _outcome(R.bounced_at, Campaign.bounced_count, "bounced"),
    "email.failed": lambda: _outcome(R.failed_at, Campaign.failed_count, "failed"),
}


def handlers(settings: Settings) -> dict[str, Handler]:
    """The events campaign statistics count."""
    made = {event_type: make() for event_type, make in OUTCOMES.items()}
    return {**made, "subscription.changed": on_subscription_changed}
