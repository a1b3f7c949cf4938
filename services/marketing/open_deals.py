"""The open-deals fact of the contact replica: `deals_open`, the contact's deals whose newest
known status is `open`, counted the way replica.py counts every fact (one `ContactFact` of
kind `deal_open` per deal, ordered by the deal's `aggregate_version`).

Every `deal.*` event of sales carries the deal as its API shows it, with `status`; an event
without one implies it by its type (won, lost, reopened: open, created: open) or changes
nothing. A deleted deal is not open. Automations read it (`contact.deals_open gt 0`).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.marketing.contact_data import event_version, uuid_value
from services.marketing.replica import record_fact
from shared.bus import Handler, PermanentError
from shared.config import Settings
from shared.events import Envelope

DEAL_STATUSES = ("open", "won", "lost")
DEAL_EVENTS = (
    "deal.created",
    "deal.updated",
    "deal.stage_changed",
    "deal.won",
    "deal.lost",
    "deal.reopened",
    "deal.deleted",
)
IMPLIED_STATUS = {
    "deal.created": "open",
    "deal.won": "won",
    "deal.lost": "lost",
    "deal.reopened": "open",
}


def on_deal_status(session: Session, event: Envelope) -> None:
    """A deal counts as open for its contact while its newest status is open."""
    data = event.data
    if data.get("redacted"):
        return
    deal_id = uuid_value(data.get("deal_id") or data.get("id", event.aggregate_id), "deal_id")
    status = data.get("status", IMPLIED_STATUS.get(event.type))
    deleted = event.type == "deal.deleted"
    if status is None and not deleted:
        return  # nothing said about the status
    if not deleted and status not in DEAL_STATUSES:
        raise PermanentError(f"{event.type} status must be one of {', '.join(DEAL_STATUSES)}")
    record_fact(
        session,
        "deal_open",
        deal_id,
        data.get("contact_id"),
        active=not deleted and status == "open",
        version=event_version(event),
    )


def handlers(settings: Settings) -> dict[str, Handler]:
    """The deal events that keep `deals_open`."""
    return dict.fromkeys(DEAL_EVENTS, on_deal_status)
