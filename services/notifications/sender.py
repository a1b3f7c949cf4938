"""The worker's sender: delivers queued messages over SMTP, each at most once.

One pass of `send_due`:
1. Reconcile: a message still `sending` long after its attempt began (SENDING_LEASE) belongs
   to a sender that died. Its marks (below) settle it: accepted by the server, it is `sent`
   (`email.sent`); never begun (or refused), it is queued again; begun and unanswered, it may
   have arrived, so it is `failed` with `email.failed` (`uncertain: true`), never resent.
2. Claim a batch: due queued messages are locked with `SELECT ... FOR UPDATE SKIP LOCKED`
   (on SQLite: the write lock, taken first) and their `next_attempt_at` moved to the claim's
   end, committed. Other senders (worker replicas) skip them until then.
3. Send the batch SEND_GROUP messages at a time. One transaction marks a group `sending`
   (`sending_started_at`, attempts + 1), only the messages still queued under this claim,
   together with the outcomes of the group before, and commits before any of it goes out.
   Each message is built (tracking, MIME) in the gaps of the one before's SMTP conversation,
   while the server answers its commands: one connection, one message at a time.
4. Before each conversation a tiny UPDATE, committed at once (outcomes.SubmissionMarks),
   marks it begun, with the verdict of the conversation before: accepted (`submitted_at`)
   or refused (not begun after all); the group's last verdict gets one of its own. The
   server's answer to the end of DATA is the commit point: only the message between it and
   its mark can be in doubt.
5. The full outcomes are written with the next group's transaction (services/notifications/
   outcomes.py): sent, retried after a backoff, failed or bounced, each with its event.
   HTML gets its tracking links and open pixel as it goes out.
When a pass ends early (an error, a stop), the messages it marked but never submitted go
back to the queue and its claimed ones are released; only a message the server may have
taken stays `sending`, for reconciliation. A process killed outright (SIGKILL) leaves at
most ONE message in doubt, the one in its SMTP conversation; the rest of its group is known
by the marks (sent, or queued again) and its claim is taken again when it ends. No email
reaches the server twice.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from services.notifications.mailer import (
    Mailer,
    Prepared,
    SmtpError,
    TransientSmtpError,
    UncertainSmtpError,
)
from services.notifications.mime import Outgoing
from services.notifications.models import Message
from services.notifications.outcomes import (
    Outcome,
    SubmissionMarks,
    reconcile_interrupted,
    record_outcomes,
)
from services.notifications.tracking import instrument_html
from shared.config import Settings
from shared.db import Database, take_write_lock
from shared.events import utcnow
from shared.worker import Timer

log = logging.getLogger(__name__)

BATCH_SIZE = 50
# Messages marked `sending` per transaction, whose outcomes and events are written together.
SEND_GROUP = 20
# How long a claimed message is reserved for its sender before another may take it.
CLAIM_LEASE = timedelta(minutes=5)
# A worker's pass stops taking new groups after this, so its other timers get their turn.
TIMER_PASS_SECONDS = 5.0
OUTGOING_COLUMNS = (
    Message.id,
    Message.from_address,
    Message.to_address,
    Message.subject,
    Message.body_text,
    Message.body_html,
    Message.headers,
)


@dataclass(frozen=True)
class Claim:
    """Messages reserved for this sender until `until` (their `next_attempt_at`)."""

    ids: list[str]
    until: datetime


def send_due(
    db: Database,
    settings: Settings,
    mailer: Mailer | None = None,
    now: datetime | None = None,
    batch: int = BATCH_SIZE,
    time_limit: float | None = None,
) -> int:
    """Deliver every due queued message (reconciling interrupted ones first); how many
    SMTP attempts were made. Without a `mailer`, one is opened for the configured server
    when there is something to send and closed at the end; `now` fixes the clock (tests)."""
    clock: Callable[[], datetime] = (lambda: now) if now is not None else utcnow
    deadline = None if time_limit is None else time.monotonic() + time_limit
    reconcile_interrupted(db, clock())
    connection = _MailerHolder(settings, mailer)
    attempted = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            claim = claim_due(db, clock(), batch)
            attempted += deliver_claimed(db, settings, connection, claim, clock, deadline)
            if len(claim.ids) < batch:
                break
    finally:
        connection.close()
    if attempted:
        log.info("sender made %d SMTP attempt(s)", attempted)
    return attempted


def sending_timer(settings: Settings, db: Database) -> Timer:
    """The worker's timer running `send_due` every `notifications_tick_seconds`."""
    every = float(settings.extra.get("notifications_tick_seconds", 1.0))
    action = functools.partial(send_due, db, settings, time_limit=TIMER_PASS_SECONDS)
    return Timer(every, action, "send_due")


class _MailerHolder:
    """The given mailer, or one opened on first use and closed by `close()`."""

    def __init__(self, settings: Settings, mailer: Mailer | None) -> None:
        self.settings, self.given, self.opened = settings, mailer, None

    def get(self) -> Mailer:
        if self.given is not None:
            return self.given
        if self.opened is None:
            self.opened = Mailer.from_settings(self.settings)
        return self.opened

    def close(self) -> None:
        if self.opened is not None:
            self.opened.close()


# --- claiming -------------------------------------------------------------------------------


def _due(now: datetime) -> Any:
    return and_(
        Message.status == "queued",
        or_(Message.next_attempt_at.is_(None), Message.next_attempt_at <= now),
    )


def claim_due(db: Database, now: datetime, limit: int) -> Claim:
    """Reserve up to `limit` due queued messages, oldest first, for this sender (committed).

    The candidates are locked and listed first, then updated by id: an `IN (SELECT ...
    LIMIT n FOR UPDATE SKIP LOCKED)` inside the UPDATE may be re-run by PostgreSQL for
    every row it scans, claiming far more than `limit`.
    """
    until = now + CLAIM_LEASE
    candidates = (
        select(Message.id)
        .where(_due(now))
        .order_by(Message.created_at, Message.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with db.session() as session:
        if session.scalar(select(Message.id).where(_due(now)).limit(1)) is None:
            return Claim([], until)  # idle: no lock taken (SQLite has only one)
        take_write_lock(session)
        ids = list(session.scalars(candidates))
        if not ids:
            return Claim([], until)
        claimed = set(
            session.scalars(
                update(Message)
                .where(Message.id.in_(ids), _due(now))
                .values(next_attempt_at=until)
                .returning(Message.id)
                .execution_options(synchronize_session=False)
            )
        )
    return Claim([message_id for message_id in ids if message_id in claimed], until)


def start_group(
    session: Session, ids: list[str], claim: Claim, now: datetime
) -> list[tuple[Outgoing, int]]:
    """Mark claimed messages `sending` (attempts + 1, no submission marks yet): each with its
    new version, in claim order; those no longer ours are left out."""
    rows = session.execute(
        update(Message)
        .where(
            Message.id.in_(ids),
            Message.status == "queued",
            Message.next_attempt_at == claim.until,
        )
        .values(
            status="sending",
            sending_started_at=now,
            smtp_started_at=None,
            submitted_at=None,
            next_attempt_at=None,
            attempts=Message.attempts + 1,
            version=Message.version + 1,
            updated_at=now,
        )
        .returning(*OUTGOING_COLUMNS, Message.version)
        .execution_options(synchronize_session=False)
    ).all()
    order = {message_id: index for index, message_id in enumerate(ids)}
    started = [(Outgoing(*row[:6], headers=dict(row[6] or {})), row[7]) for row in rows]
    return sorted(started, key=lambda pair: order[pair[0].id])


def give_back(session: Session, claim: Claim, unclaimed: list[str], unsent: list[str]) -> None:
    """Release claimed messages never marked, and re-queue marked ones never submitted."""
    if unclaimed:
        session.execute(
            update(Message)
            .where(Message.id.in_(unclaimed), Message.next_attempt_at == claim.until)
            .where(Message.status == "queued")
            .values(next_attempt_at=None)
            .execution_options(synchronize_session=False)
        )
    if unsent:
        session.execute(
            update(Message)
            .where(Message.id.in_(unsent), Message.status == "sending")
            .values(
                status="queued",
                sending_started_at=None,
                attempts=Message.attempts - 1,
                version=Message.version + 1,
            )
            .execution_options(synchronize_session=False)
        )


# --- delivering -----------------------------------------------------------------------------


def deliver_claimed(
    db: Database,
    settings: Settings,
    mailers: _MailerHolder,
    claim: Claim,
    clock: Callable[[], datetime],
    deadline: float | None = None,
) -> int:
    """Attempt the claimed messages, SEND_GROUP at a time; how many were attempted."""
    if not claim.ids:
        return 0
    marks = SubmissionMarks(db)
    with (
        db.engine.connect() as connection,  # one connection for the pass
        Session(bind=connection, info={"db": db}, expire_on_commit=False) as session,
    ):
        delivery = _Delivery(session, settings, mailers, claim, clock, marks)
        try:
            delivery.run(deadline)
        finally:
            try:
                delivery.finish()
            finally:
                marks.close()
    return delivery.attempted


class _Delivery:
    """One pass over a claim: each group is marked `sending` and committed, then sent, each
    conversation marked begun first; every message is built in the gaps of the one before's
    SMTP conversation."""

    def __init__(
        self,
        session: Session,
        settings: Settings,
        mailers: _MailerHolder,
        claim: Claim,
        clock: Callable[[], datetime],
        marks: SubmissionMarks,
    ) -> None:
        self.session, self.settings, self.mailers = session, settings, mailers
        self.claim, self.clock, self.marks = claim, clock, marks
        self.remaining = list(claim.ids)  # claimed, not marked yet
        self.unsubmitted: list[str] = []  # marked `sending`, not handed to SMTP yet
        self.outcomes: list[Outcome] = []  # known, not written yet
        self.unmarked: Outcome | None = None  # the last conversation's, not in its marks yet
        self.attempted = 0

    def run(self, deadline: float | None) -> None:
        while self.remaining and (deadline is None or time.monotonic() < deadline):
            group, self.remaining = self.remaining[:SEND_GROUP], self.remaining[SEND_GROUP:]
            started = self._start(group)
            upcoming = self._build(started[0][0]) if started else None
            for index, (outgoing, _) in enumerate(started):
                prepared = upcoming.finish() if upcoming else None
                following = started[index + 1][0] if index + 1 < len(started) else None
                upcoming = self._build(following) if following else None
                if prepared is not None and not self._begin(prepared):
                    prepared = None
                self.unsubmitted.remove(outgoing.id)
                if prepared is not None:
                    steps = upcoming.steps if upcoming else None
                    self.unmarked = _converse(self.mailers.get(), prepared, steps)
                    self.outcomes.append(self.unmarked)
            if self.unmarked is not None:  # in doubt no longer than its conversation
                self.marks.write(None, self.unmarked, self.clock())
                self.unmarked = None

    def _start(self, group: list[str]) -> list[tuple[Outgoing, int]]:
        """One transaction: the outcomes known so far, and `group` marked `sending`."""
        take_write_lock(self.session)
        record_outcomes(self.session, self.outcomes, self.clock())
        started = start_group(self.session, group, self.claim, self.clock())
        self.session.commit()
        self.outcomes.clear()
        self.unsubmitted = [outgoing.id for outgoing, _ in started]
        self.marks.track({outgoing.id: version for outgoing, version in started})
        self.attempted += len(started)
        return started

    def _begin(self, prepared: Prepared) -> bool:
        """Mark the conversation begun, with the last one's verdict; False if the message is
        no longer this attempt's (reconciled and taken by another sender): not sent."""
        begun = self.marks.write(prepared.message_id, self.unmarked, self.clock())
        self.unmarked = None
        if not begun:
            log.warning("message %s is no longer this sender's: not sent", prepared.message_id)
        return begun

    def _build(self, outgoing: Outgoing) -> _Building:
        return _Building(self.mailers.get(), self.settings, outgoing, self.outcomes)

    def finish(self) -> None:
        """Write what is known; give back what was never marked or never submitted."""
        self.session.rollback()  # whatever failed midway; committed steps stay
        take_write_lock(self.session)
        record_outcomes(self.session, self.outcomes, self.clock())
        give_back(self.session, self.claim, self.remaining, self.unsubmitted)
        self.session.commit()


class _Building:
    """One message made ready for the wire step by step (tracking, then MIME), so the steps
    can run while the server answers another message's commands."""

    def __init__(
        self, mailer: Mailer, settings: Settings, outgoing: Outgoing, outcomes: list[Outcome]
    ) -> None:
        self.mailer, self.settings, self.outgoing, self.outcomes = (
            mailer,
            settings,
            outgoing,
            outcomes,
        )
        self.prepared: Prepared | None = None
        self.steps = self._steps()

    def finish(self) -> Prepared | None:
        """The message ready to send; None (its outcome noted) if it cannot be built."""
        for _ in self.steps:
            pass
        return self.prepared

    def _steps(self) -> Iterator[None]:
        outgoing = self.outgoing
        try:
            tracked = instrumented(self.settings, outgoing)
            yield None
            mime = self.mailer.build(tracked)
            yield None
            self.prepared = self.mailer.prepare(tracked, mime)
        except SmtpError as error:  # InvalidMessage: it can never be sent
            self.outcomes.append(Outcome(outgoing.id, error))
        except Exception as error:  # a fault of ours, before anything went out: try later
            log.exception("could not build message %s", outgoing.id)
            failure = TransientSmtpError(f"cannot build: {error!r}")
            self.outcomes.append(Outcome(outgoing.id, failure))


def _converse(mailer: Mailer, prepared: Prepared, meanwhile: Iterator[None] | None) -> Outcome:
    """The SMTP conversation of one message (`meanwhile` runs in its gaps): its outcome."""
    try:
        mailer.submit(prepared, meanwhile)
        mailer.confirm(meanwhile)
    except SmtpError as error:
        return Outcome(prepared.message_id, error)
    except Exception as error:  # the data may have gone out: never send it again
        log.exception("unexpected error sending message %s", prepared.message_id)
        return Outcome(prepared.message_id, UncertainSmtpError(repr(error)))
    return Outcome(prepared.message_id, None, prepared.smtp_message_id)


def instrumented(settings: Settings, outgoing: Outgoing) -> Outgoing:
    """The message with open/click tracking in its HTML, added as the mail goes out (the
    stored body stays as requested; queue_message has no settings to sign links with)."""
    if not outgoing.body_html:
        return outgoing
    return replace(outgoing, body_html=instrument_html(settings, outgoing.id, outgoing.body_html))
