"""The fan-out of a launched campaign: run by the worker's timer, never by the HTTP request.

Each tick (`run_campaigns`):
1. `launch_due`: scheduled campaigns whose `scheduled_at` has come become `sending`.
2. `claim_campaign`: one `sending` campaign is claimed with a lease (`claim_token`,
   `claimed_until`): the candidate's id is read first (`FOR UPDATE SKIP LOCKED` on
   PostgreSQL, the write lock on SQLite), then one UPDATE by that id, repeating the
   claimable condition, takes it. (An UPDATE ... WHERE id IN (SELECT ... LIMIT 1 FOR UPDATE
   SKIP LOCKED) can claim more rows than the limit on PostgreSQL.) A worker that dies
   leaves a lease that runs out; any worker then goes on where it stopped.
3. `fan_out`: transaction by transaction, each first renewing the lease (which locks the
   campaign row until commit, so two workers never work one campaign at once, and a
   cancel waits for the chunk in progress):
   - the first freezes the recipients: INSERT ... SELECT of the segment's members minus
     the unsubscribed and suppressed into `campaign_recipients` (unique per campaign and
     contact), and records `campaign.launched`;
   - each next one takes up to `chunk_size` pending recipients, checks them again (a
     contact erased, unsubscribed or suppressed since the freeze, erased addresses known
     only by hash with `suppressed_among`, becomes `skipped`), writes one
     `email.requested` per recipient into the outbox in one statement and marks them
     `requested`, in the same transaction: a recipient is requested exactly once;
   - when none is pending the campaign is `sent` and `campaign.sent` is recorded.
   The message id is uuid5(campaign id, contact id): were a request ever written twice,
   notifications would still queue one email.

`email.requested` data: to, contact_id, campaign_id, category "marketing", message_id,
headers {List-Unsubscribe: <link>} (notifications adds List-Unsubscribe-Post), from_address
when the campaign names a sender, and either template + variables {contact: {first_name,
last_name, name, email}, unsubscribe_url} or subject, body_text, body_html (the unsubscribe
link appended). Its aggregate is the contact, so an erasure redacts requests not yet sent.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, case, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from services.marketing.campaigns import (
    CANCELLED,
    SCHEDULED,
    SENDING,
    SENT,
    Mailing,
    email_request,
    touch,
)
from services.marketing.consent import (
    default_list,
    subscribed_condition,
    suppressed_among,
    unsubscribed_or_suppressed_condition,
)
from services.marketing.models import Campaign, CampaignRecipient, Contact, Segment
from services.marketing.segment_filters import reachable
from services.marketing.segments import segment_members_query
from shared.config import Settings
from shared.db import Database, take_write_lock
from shared.events import isoformat, utcnow
from shared.outbox import outbox_row, record_event, record_events
from shared.worker import Timer

log = logging.getLogger(__name__)

CHUNK_SIZE = 1000
LEASE_SECONDS = 60.0
BUDGET_SECONDS = 30.0
TICK_SECONDS = 1.0


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one campaign's fan-out."""

    campaign_id: str
    token: str


# --- launching and claiming -----------------------------------------------------------------


def launch_due(db: Database, now: datetime | None = None) -> int:
    """Make scheduled campaigns whose time has come `sending`; how many."""
    now = now or utcnow()
    due = (Campaign.status == SCHEDULED, Campaign.scheduled_at <= now)
    with db.session() as session:
        if session.scalar(select(Campaign.id).where(*due).limit(1)) is None:
            return 0  # the usual case: no write lock taken
        take_write_lock(session)
        launched = session.execute(
            update(Campaign)
            .where(*due)
            .values(status=SENDING, launched_at=now, version=Campaign.version + 1, updated_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
    log.info("launched %d scheduled campaign(s)", launched)
    return launched


def _claimable(now: datetime) -> tuple[ColumnElement[bool], ...]:
    lease_over = or_(Campaign.claimed_until.is_(None), Campaign.claimed_until < now)
    return (Campaign.status == SENDING, lease_over)


def claim_campaign(db: Database, lease_seconds: float = LEASE_SECONDS) -> Claim | None:
    """Claim one sending campaign no live lease holds (oldest launch first), or None."""
    now = utcnow()
    with db.session() as session:
        if session.scalar(select(Campaign.id).where(*_claimable(now)).limit(1)) is None:
            return None
        take_write_lock(session)
        candidate = session.scalar(
            select(Campaign.id)
            .where(*_claimable(now))
            .order_by(Campaign.launched_at, Campaign.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if candidate is None:
            return None
        token = str(uuid.uuid4())
        claimed = session.execute(
            update(Campaign)
            .where(Campaign.id == candidate, *_claimable(now))
            .values(claim_token=token, claimed_until=now + timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        ).rowcount
    return Claim(candidate, token) if claimed else None


def renew(session: Session, claim: Claim, lease_seconds: float) -> Campaign | None:
    """Extend the lease (locking the campaign until commit); None when it is no longer ours."""
    take_write_lock(session)
    renewed = session.execute(
        update(Campaign)
        .where(
            Campaign.id == claim.campaign_id,
            Campaign.claim_token == claim.token,
            Campaign.status == SENDING,
        )
        .values(claimed_until=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    ).rowcount
    if not renewed:
        return None
    return session.get(Campaign, claim.campaign_id, populate_existing=True)


def release(db: Database, claim: Claim) -> None:
    """Give a claim back (a tick's time is up) so any worker may go on with it."""
    with db.session() as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == claim.campaign_id, Campaign.claim_token == claim.token)
            .values(claim_token=None, claimed_until=None)
            .execution_options(synchronize_session=False)
        )


# --- who receives it ------------------------------------------------------------------------


def consent_list_id(session: Session, campaign: Campaign) -> str:
    """The list whose consent rules the campaign: its own, or the default list."""
    return campaign.list_id or default_list(session).id


def consent_condition(session: Session, campaign: Campaign) -> ColumnElement[bool]:
    """SQL on the replica: the contact may receive the campaign (consent-wise)."""
    if campaign.list_id:
        return subscribed_condition(Contact.id, campaign.list_id) & ~(
            unsubscribed_or_suppressed_condition(Contact.id, Contact.email_key)
        )
    list_id = consent_list_id(session, campaign)
    return ~unsubscribed_or_suppressed_condition(Contact.id, Contact.email_key, list_id)


def freeze_recipients(session: Session, campaign: Campaign) -> None:
    """Choose the recipients once, in SQL, and record `campaign.launched`."""
    segment = session.get(Segment, campaign.segment_id)
    now = utcnow()
    if segment is None:
        log.warning("campaign %s: its segment is gone; cancelled", campaign.id)
        campaign.status, campaign.cancelled_at = CANCELLED, now
        campaign.claim_token = campaign.claimed_until = None
        touch(campaign, now)
        return
    members = (
        segment_members_query(session, segment)
        .where(consent_condition(session, campaign))
        .with_only_columns(literal(campaign.id, String), Contact.id, literal("pending", String))
    )
    session.execute(
        insert(CampaignRecipient).from_select(["campaign_id", "contact_id", "status"], members)
    )
    # Counted, not read from rowcount (which drivers need not give for INSERT ... SELECT).
    frozen = (
        session.scalar(select(func.count()).where(CampaignRecipient.campaign_id == campaign.id))
        or 0
    )
    campaign.recipients_count, campaign.frozen_at = frozen, now
    data = {**_summary(campaign), "launched_at": isoformat(campaign.launched_at or now)}
    record_event(session, "campaign.launched", campaign.id, data)
    log.info("campaign %s: %d recipients frozen", campaign.id, frozen)


def _summary(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "name": campaign.name,
        "segment_id": campaign.segment_id,
        "list_id": campaign.list_id,
        "recipients": campaign.recipients_count,
    }


# --- the emails -----------------------------------------------------------------------------


def _pending(session: Session, campaign: Campaign, limit: int) -> list[Any]:
    """The next pending recipients, with their address now and whether they may receive it."""
    may_receive = case((reachable() & consent_condition(session, campaign), True), else_=False)
    return list(
        session.execute(
            select(
                CampaignRecipient.contact_id,
                Contact.email,
                Contact.first_name,
                Contact.last_name,
                may_receive.label("may_receive"),
            )
            .join(Contact, Contact.id == CampaignRecipient.contact_id, isouter=True)
            .where(
                CampaignRecipient.campaign_id == campaign.id,
                CampaignRecipient.status == "pending",
            )
            .order_by(CampaignRecipient.contact_id)
            .limit(limit)
        )
    )


def request_chunk(session: Session, settings: Settings, campaign: Campaign, limit: int) -> int:
    """Request the emails of up to `limit` pending recipients (skipping the unreachable);
    how many pending recipients were handled."""
    rows = _pending(session, campaign, limit)
    suppressed = suppressed_among(session, [row.email for row in rows if row.may_receive])
    ready = [row for row in rows if row.may_receive and row.email not in suppressed]
    skipped = [row.contact_id for row in rows if not row.may_receive or row.email in suppressed]
    mailing = Mailing.of(campaign, consent_list_id(session, campaign))
    requests = [email_request(settings, mailing, row) for row in ready]
    record_events(
        session,
        [
            outbox_row(settings.service, "email.requested", data["contact_id"], data)
            for data in requests
        ],
    )
    _skip(session, campaign, skipped)
    if rows:
        _mark_requested(session, campaign, rows[0].contact_id, rows[-1].contact_id)
    campaign.requested_count += len(ready)
    campaign.recipients_count -= len(skipped)
    return len(rows)


def _skip(session: Session, campaign: Campaign, contact_ids: list[str]) -> None:
    if contact_ids:
        session.execute(
            update(CampaignRecipient)
            .where(
                CampaignRecipient.campaign_id == campaign.id,
                CampaignRecipient.contact_id.in_(contact_ids),
            )
            .values(status="skipped")
            .execution_options(synchronize_session=False)
        )


def _mark_requested(session: Session, campaign: Campaign, first: str, last: str) -> None:
    """The chunk's other recipients are requested: the pending ones from `first` to `last`
    (the chunk was the first pending ones in this order; the claim keeps it so), found by
    an index range, not a list of 1,000 ids."""
    session.execute(
        update(CampaignRecipient)
        .where(
            CampaignRecipient.campaign_id == campaign.id,
            CampaignRecipient.status == "pending",
            CampaignRecipient.contact_id.between(first, last),
        )
        .values(status="requested", requested_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def mark_sent(session: Session, campaign: Campaign) -> None:
    """Every recipient is requested: the campaign is `sent`, with `campaign.sent`."""
    now = utcnow()
    campaign.status, campaign.sent_at = SENT, now
    campaign.claim_token = campaign.claimed_until = None
    touch(campaign, now)
    data = {**_summary(campaign), "requested": campaign.requested_count, "sent_at": isoformat(now)}
    record_event(session, "campaign.sent", campaign.id, data, aggregate_version=campaign.version)
    log.info("campaign %s sent: %d emails requested", campaign.id, campaign.requested_count)


# --- the loop -------------------------------------------------------------------------------


def fan_out(
    db: Database,
    settings: Settings,
    claim: Claim,
    *,
    chunk_size: int = CHUNK_SIZE,
    lease_seconds: float = LEASE_SECONDS,
    deadline: float | None = None,
) -> int:
    """Work a claimed campaign, a transaction per chunk, until it is sent, the claim is lost
    (cancelled, or taken over) or `deadline` (time.monotonic) passes; emails requested."""
    requested = 0
    while True:
        with db.session() as session:
            campaign = renew(session, claim, lease_seconds)
            if campaign is None:
                return requested
            if campaign.frozen_at is None:
                freeze_recipients(session, campaign)
                continue
            before = campaign.requested_count
            handled = request_chunk(session, settings, campaign, chunk_size)
            requested += campaign.requested_count - before
            if handled < chunk_size:
                mark_sent(session, campaign)
                return requested
        if deadline is not None and time.monotonic() > deadline:
            release(db, claim)
            return requested


def run_campaigns(
    db: Database,
    settings: Settings,
    *,
    chunk_size: int = CHUNK_SIZE,
    lease_seconds: float = LEASE_SECONDS,
    budget_seconds: float = BUDGET_SECONDS,
) -> int:
    """One tick: launch what is due, then fan out what can be claimed for up to
    `budget_seconds` (the rest waits for the next tick); emails requested."""
    launch_due(db)
    deadline = time.monotonic() + budget_seconds
    requested = 0
    while time.monotonic() < deadline:
        claim = claim_campaign(db, lease_seconds)
        if claim is None:
            break
        requested += fan_out(
            db,
            settings,
            claim,
            chunk_size=chunk_size,
            lease_seconds=lease_seconds,
            deadline=deadline,
        )
    return requested


def campaign_timer(settings: Settings, db: Database) -> Timer:
    """The worker's timer launching and fanning out campaigns."""
    every = float(settings.extra.get("campaign_tick_seconds", TICK_SECONDS))
    return Timer(every, lambda: run_campaigns(db, settings), name="campaigns")
