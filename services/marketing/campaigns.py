"""Campaigns: an email to a segment, from draft to sent. The rules the HTTP API and the
worker share; the fan-out itself is in campaign_fanout.py, the counters in campaign_stats.py.

Life: `draft` (edited freely) -> `launch` -> `sending` (now) or `scheduled` (a future
`scheduled_at`; the worker's timer makes it `sending` then) -> `sent` once every recipient's
email is requested from notifications. `cancel` stops a scheduled campaign, or a sending
one (what was requested already goes; the rest never will). Only drafts are deleted; only
drafts and scheduled campaigns are changed.

Launching a campaign that is sending, sent or cancelled is a 409 and changes nothing: a
campaign is launched once (a client retrying a launch sends `Idempotency-Key` to get the
first 202 back). Launching a scheduled one again launches it now, or reschedules it.

Content: a `template` (a notifications template's name or id, rendered per recipient with
`contact` and `unsubscribe_url`), or a `subject` with `body_text` and/or `body_html` (the
unsubscribe link is appended to each body). Not both.

Recipients (see campaign_fanout.py): with `list_id`, the segment's members subscribed to
that list; without, the members not unsubscribed from the default list ("newsletter");
never a suppressed address.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.marketing.models import (
    Campaign,
    CampaignRecipient,
    Segment,
    SubscriptionList,
    new_id,
)
from services.marketing.unsubscribe import unsubscribe_url
from shared.config import Settings
from shared.db import take_write_lock
from shared.events import utcnow
from shared.web import check_version, conflict, invalid, not_found

DRAFT, SCHEDULED, SENDING, SENT, CANCELLED = "draft", "scheduled", "sending", "sent", "cancelled"
STATUSES = (DRAFT, SCHEDULED, SENDING, SENT, CANCELLED)
EDITABLE = (DRAFT, SCHEDULED)
RECIPIENT_STATUSES = (
    "pending",
    "requested",
    "skipped",
    "cancelled",
    "sent",
    "failed",
    "bounced",
)
BODY_FIELDS = ("subject", "body_text", "body_html")
BOTH_CONTENTS = "Give a template, or a subject and body: not both."


def message_id_for(campaign_id: str | uuid.UUID, contact_id: str) -> str:
    """The one email a campaign sends a contact: the same id however often requested."""
    namespace = campaign_id if isinstance(campaign_id, uuid.UUID) else uuid.UUID(campaign_id)
    return str(uuid.uuid5(namespace, contact_id))


# --- reading --------------------------------------------------------------------------------


def get_campaign(session: Session, campaign_id: Any, *, for_update: bool = False) -> Campaign:
    """A campaign by id, or 404; `for_update` locks it so changes queue up."""
    statement = select(Campaign).where(Campaign.id == str(campaign_id))
    if for_update:
        take_write_lock(session)
        statement = statement.with_for_update()
    campaign = session.scalars(statement).first()
    if campaign is None:
        raise not_found("Campaign", campaign_id)
    return campaign


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def stats_view(campaign: Campaign) -> dict[str, Any]:
    """The counters, and rates: opens, clicks, unsubscribes per email sent (delivered);
    bounces per email requested."""
    sent = campaign.sent_count
    return {
        "recipients": campaign.recipients_count,
        "requested": campaign.requested_count,
        "sent": sent,
        "opened": campaign.opened_count,
        "clicked": campaign.clicked_count,
        "bounced": campaign.bounced_count,
        "failed": campaign.failed_count,
        "unsubscribed": campaign.unsubscribed_count,
        "open_rate": _rate(campaign.opened_count, sent),
        "click_rate": _rate(campaign.clicked_count, sent),
        "bounce_rate": _rate(campaign.bounced_count, campaign.requested_count),
        "unsubscribe_rate": _rate(campaign.unsubscribed_count, sent),
    }


def campaign_view(campaign: Campaign) -> dict[str, Any]:
    """A campaign as the API answers it."""
    return {
        "id": campaign.id,
        "name": campaign.name,
        "segment_id": campaign.segment_id,
        "list_id": campaign.list_id,
        "subject": campaign.subject,
        "body_text": campaign.body_text,
        "body_html": campaign.body_html,
        "template": campaign.template,
        "sender": campaign.sender,
        "status": campaign.status,
        "scheduled_at": campaign.scheduled_at,
        "launched_at": campaign.launched_at,
        "sent_at": campaign.sent_at,
        "cancelled_at": campaign.cancelled_at,
        "stats": stats_view(campaign),
        "version": campaign.version,
        "created_at": campaign.created_at,
        "updated_at": campaign.updated_at,
    }


def recipient_view(row: CampaignRecipient, email: str | None) -> dict[str, Any]:
    """A recipient as the recipients list shows it (the address: the replica's now)."""
    return {
        "contact_id": row.contact_id,
        "email": email,
        "status": row.status,
        "message_id": message_id_for(row.campaign_id, row.contact_id) if row.requested_at else None,
        "requested_at": row.requested_at,
        "sent_at": row.sent_at,
        "opened_at": row.opened_at,
        "clicked_at": row.clicked_at,
        "bounced_at": row.bounced_at,
        "failed_at": row.failed_at,
        "unsubscribed_at": row.unsubscribed_at,
    }


# --- checks ---------------------------------------------------------------------------------


def check_references(session: Session, values: Mapping[str, Any]) -> None:
    """422 when `segment_id` or `list_id` (if given) names nothing."""
    errors = {}
    if "segment_id" in values and session.get(Segment, values["segment_id"]) is None:
        errors["segment_id"] = ["No segment has this id."]
    if values.get("list_id") and session.get(SubscriptionList, values["list_id"]) is None:
        errors["list_id"] = ["No subscription list has this id."]
    if errors:
        raise invalid(errors)


def check_content(values: Mapping[str, Any], *, complete: bool) -> None:
    """422 for a template beside a subject or body; with `complete`, also for no content."""
    has_body = any(values.get(name) for name in BODY_FIELDS)
    if values.get("template") and has_body:
        raise invalid({"template": [BOTH_CONTENTS]})
    if not complete or values.get("template"):
        return
    errors = {}
    if not (values.get("subject") or "").strip():
        errors["subject"] = ["A campaign needs a subject (or a template)."]
    if not ((values.get("body_text") or "").strip() or (values.get("body_html") or "").strip()):
        errors["body_text"] = ["A campaign needs a text or an HTML body (or a template)."]
    if errors:
        raise invalid(errors, "The campaign is not ready to send")


def _content_of(campaign: Campaign) -> dict[str, Any]:
    return {name: getattr(campaign, name) for name in (*BODY_FIELDS, "template")}


# --- the email of one recipient ------------------------------------------------------------


@dataclass(frozen=True)
class Mailing:
    """What every email of a campaign shares, read once per chunk (not per recipient)."""

    campaign_id: str
    namespace: uuid.UUID  # the campaign id, for the message ids
    list_id: str  # the list its unsubscribe links leave
    sender: str | None
    template: str | None
    subject: str | None
    text: str | None  # the text body, ready for the unsubscribe link
    html: tuple[str, str] | None  # the HTML body, split where the link goes

    @classmethod
    def of(cls, campaign: Campaign, list_id: str) -> Mailing:
        html_body = None
        if campaign.body_html:
            at = campaign.body_html.lower().rfind("</body>")
            at = len(campaign.body_html) if at < 0 else at
            html_body = (campaign.body_html[:at], campaign.body_html[at:])
        text = f"{campaign.body_text.rstrip()}\n\n--\nUnsubscribe: " if campaign.body_text else None
        return cls(
            campaign.id,
            uuid.UUID(campaign.id),
            list_id,
            campaign.sender,
            campaign.template,
            campaign.subject,
            text,
            html_body,
        )


def email_request(settings: Settings, mailing: Mailing, recipient: Any) -> dict[str, Any]:
    """The data of one recipient's `email.requested` (`recipient`: contact_id, email,
    first_name, last_name)."""
    link = unsubscribe_url(settings, recipient.contact_id, recipient.email, mailing.list_id)
    data: dict[str, Any] = {
        "to": recipient.email,
        "contact_id": recipient.contact_id,
        "campaign_id": mailing.campaign_id,
        "category": "marketing",
        "message_id": message_id_for(mailing.namespace, recipient.contact_id),
        "headers": {"List-Unsubscribe": f"<{link}>"},
    }
    if mailing.sender:
        data["from_address"] = mailing.sender
    if mailing.template:
        names = [part for part in (recipient.first_name, recipient.last_name) if part]
        contact = {
            "first_name": recipient.first_name,
            "last_name": recipient.last_name,
            "name": " ".join(names) or None,
            "email": recipient.email,
        }
        data["template"] = mailing.template
        data["variables"] = {"contact": contact, "unsubscribe_url": link}
        return data
    data["subject"] = mailing.subject
    data["body_text"] = f"{mailing.text}{link}\n" if mailing.text else ""
    data["body_html"] = None
    if mailing.html:
        footer = f'<p style="font-size:small"><a href="{html.escape(link)}">Unsubscribe</a></p>'
        data["body_html"] = mailing.html[0] + footer + mailing.html[1]
    return data


# --- changes --------------------------------------------------------------------------------


def touch(campaign: Campaign, now: datetime | None = None) -> None:
    """A new version of the campaign."""
    campaign.version += 1
    campaign.updated_at = now or utcnow()


def create_campaign(session: Session, data: Mapping[str, Any]) -> Campaign:
    """A new draft (version 1) from validated input; 409 when the id is taken."""
    campaign_id = str(data.get("id") or new_id())
    check_references(session, data)
    check_content(data, complete=False)
    take_write_lock(session)
    if session.get(Campaign, campaign_id) is not None:
        raise conflict(f"A campaign with id {campaign_id} exists already")
    now = utcnow()
    fields = {key: value for key, value in data.items() if key != "id"}
    campaign = Campaign(id=campaign_id, status=DRAFT, version=1, created_at=now, updated_at=now)
    for key, value in fields.items():
        setattr(campaign, key, value)
    session.add(campaign)
    session.flush()
    return campaign


def _editable(campaign: Campaign, action: str) -> None:
    if campaign.status not in EDITABLE:
        raise conflict(f"A {campaign.status} campaign cannot be {action}")


def update_campaign(
    session: Session,
    campaign: Campaign,
    changes: Mapping[str, Any],
    *,
    expected_version: int | None = None,
) -> Campaign:
    """Change a draft or scheduled campaign (a new version when something changes)."""
    check_version(campaign.version, expected_version)
    _editable(campaign, "changed")
    check_references(session, changes)
    check_content({**_content_of(campaign), **changes}, complete=False)
    changed = {key: value for key, value in changes.items() if getattr(campaign, key) != value}
    if changed:
        for key, value in changed.items():
            setattr(campaign, key, value)
        touch(campaign)
        session.flush()
    return campaign


def delete_campaign(
    session: Session, campaign: Campaign, *, expected_version: int | None = None
) -> None:
    """Delete a draft (a launched campaign stays, with its recipients and stats)."""
    check_version(campaign.version, expected_version)
    if campaign.status != DRAFT:
        raise conflict(f"Only a draft can be deleted; this campaign is {campaign.status}")
    session.delete(campaign)


def launch_campaign(
    session: Session, campaign: Campaign, scheduled_at: datetime | None = None
) -> Campaign:
    """Send a draft or scheduled campaign now (`sending`: the worker fans it out) or at a
    future `scheduled_at` (`scheduled`). 409 once it is sending, sent or cancelled."""
    if campaign.status not in EDITABLE:
        raise conflict(f"The campaign is {campaign.status}: it is launched once only")
    check_content(_content_of(campaign), complete=True)
    check_references(session, {"segment_id": campaign.segment_id, "list_id": campaign.list_id})
    now = utcnow()
    if scheduled_at is not None and scheduled_at <= now:
        raise invalid({"scheduled_at": ["Must be in the future (leave it out to send now)."]})
    if scheduled_at is None:
        campaign.status, campaign.launched_at = SENDING, now
    else:
        campaign.status, campaign.scheduled_at = SCHEDULED, scheduled_at
    touch(campaign, now)
    session.flush()
    return campaign


def cancel_campaign(session: Session, campaign: Campaign) -> Campaign:
    """Cancel a scheduled campaign, or stop a sending one (its unrequested recipients are
    cancelled; emails requested already still go). 409 for any other status."""
    if campaign.status not in (SCHEDULED, SENDING):
        raise conflict(f"A {campaign.status} campaign cannot be cancelled")
    now = utcnow()
    if campaign.status == SENDING:
        session.execute(
            update(CampaignRecipient)
            .where(
                CampaignRecipient.campaign_id == campaign.id,
                CampaignRecipient.status == "pending",
            )
            .values(status="cancelled")
            .execution_options(synchronize_session=False)
        )
    campaign.status, campaign.cancelled_at = CANCELLED, now
    campaign.claim_token = campaign.claimed_until = None
    touch(campaign, now)
    session.flush()
    return campaign
