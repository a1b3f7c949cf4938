"""What a delivery attempt came to, written into the delivery log with its email.* event.

- accepted: `sent`, `email.sent` (one UPDATE and one INSERT for a whole group);
- 4xx or a broken connection before the data went out: queued again after RETRY_DELAYS,
  `failed` (`email.failed`, reason `retries_exhausted`) after the last;
- 5xx: `failed` (`email.failed`, reason `rejected`), or `bounced` (`email.bounced`,
  `hard: true`) for an unknown mailbox, whose address is suppressed for marketing mail;
- no answer after the data went out: `failed` (`email.failed`, `uncertain: true`), never
  resent. So is a message found still `sending` past SENDING_LEASE (`reconcile_interrupted`):
  its sender died between the server's answer and writing it down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from services.notifications.mailer import (
    PermanentSmtpError,
    SmtpError,
    TransientSmtpError,
    UncertainSmtpError,
)
from services.notifications.models import Message
from services.notifications.sending import (
    EVENT_COLUMNS,
    message_event_row,
    record_message_event,
)
from services.notifications.suppressions import BOUNCED, suppress
from shared.db import Database, take_write_lock
from shared.metrics import EMAILS, count_on_commit
from shared.outbox import record_events

log = logging.getLogger(__name__)

# Waits before the 2nd, 3rd, 4th and 5th attempt after a transient failure; then it fails.
RETRY_DELAYS = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(hours=1),
)
# An attempt still unfinished after this was interrupted (SMTP timeouts are 30 s).
SENDING_LEASE = timedelta(minutes=5)
INTERRUPTED = "interrupted during delivery; not resent to avoid a duplicate (it may have arrived)"
MAX_ERROR = 2000


@dataclass(frozen=True)
class Outcome:
    """What one SMTP attempt came to: `error` None means the server accepted the message."""

    message_id: str
    error: SmtpError | None = None
    smtp_message_id: str | None = None


def record_outcomes(session: Session, outcomes: list[Outcome], now: datetime) -> None:
    """Write what the attempts came to, with their events (in the caller's transaction)."""
    sent = {
        outcome.message_id: outcome.smtp_message_id for outcome in outcomes if not outcome.error
    }
    if sent:
        _mark_sent(session, sent, now)
    for outcome in outcomes:
        if outcome.error is not None:
            record_failure(session, outcome.message_id, outcome.error, now)


def _mark_sent(session: Session, sent: dict[str, str | None], now: datetime) -> None:
    """One UPDATE for every accepted message, and their `email.sent` events in one INSERT."""
    rows = session.execute(
        update(Message)
        .where(Message.id.in_(list(sent)), Message.status == "sending")
        .values(
            status="sent",
            sent_at=now,
            smtp_message_id=case(sent, value=Message.id),
            version=Message.version + 1,
            updated_at=now,
        )
        .returning(*EVENT_COLUMNS, Message.smtp_message_id)
        .execution_options(synchronize_session=False)
    ).all()
    if len(rows) < len(sent):  # reconciled meanwhile by another sender: its verdict stands
        log.warning("%d sent message(s) were no longer sending", len(sent) - len(rows))
    service = session.info["db"].service
    count_on_commit(session, EMAILS, len(rows), service=service, outcome="sent")
    events = [
        message_event_row(
            service, "email.sent", row, smtp_message_id=row.smtp_message_id, sent_at=now
        )
        for row in rows
    ]
    record_events(session, events)


def record_failure(session: Session, message_id: str, error: SmtpError, now: datetime) -> None:
    """Write a failed attempt: retry later, failed or bounced, with its event."""
    message = session.scalar(
        select(Message)
        .where(Message.id == message_id, Message.status == "sending")
        .with_for_update()
    )
    if message is None:
        log.warning("message %s was no longer sending; its outcome is dropped", message_id)
        return
    message.version += 1
    message.updated_at = now
    if isinstance(error, TransientSmtpError):
        _retry_or_fail(session, message, error, now)
    elif isinstance(error, PermanentSmtpError) and error.hard_bounce:
        _mark_bounced(session, message, error, now)
    else:
        reason = "uncertain" if isinstance(error, UncertainSmtpError) else "rejected"
        _mark_failed(session, message, error.detail, now, reason=reason, code=error.code)


def _retry_or_fail(
    session: Session, message: Message, error: TransientSmtpError, now: datetime
) -> None:
    if message.attempts > len(RETRY_DELAYS):
        detail = f"gave up after {message.attempts} attempts: {error.detail}"
        _mark_failed(session, message, detail, now, reason="retries_exhausted", code=error.code)
        return
    message.status = "queued"
    message.last_error = error.detail[:MAX_ERROR]
    message.next_attempt_at = now + RETRY_DELAYS[message.attempts - 1]
    log.warning("message %s deferred: %s", message.id, error.detail[:200])


def _mark_failed(
    session: Session, message: Message, detail: str, now: datetime, **extra: Any
) -> None:
    message.status = "failed"
    message.failed_at = now
    message.last_error = detail[:MAX_ERROR]
    uncertain = extra.get("reason") in ("uncertain", "interrupted")
    record_message_event(
        session, "email.failed", message, error=message.last_error, uncertain=uncertain, **extra
    )
    count_on_commit(session, EMAILS, service=session.info["db"].service, outcome="failed")
    log.warning("message %s failed: %s", message.id, detail[:200])


def _mark_bounced(
    session: Session, message: Message, error: PermanentSmtpError, now: datetime
) -> None:
    message.status = "bounced"
    message.failed_at = now
    message.last_error = error.detail[:MAX_ERROR]
    # At once, in this transaction (suppressions.on_email_bounced sees the event later too).
    suppress(session, message.to_key, BOUNCED, now)
    record_message_event(
        session, "email.bounced", message, hard=True, error=message.last_error, code=error.code
    )
    count_on_commit(session, EMAILS, service=session.info["db"].service, outcome="bounced")


def reconcile_interrupted(db: Database, now: datetime, limit: int = 500) -> int:
    """Fail (never resend) messages whose attempt began over SENDING_LEASE ago; how many."""
    reconciled = 0
    stale_since = now - SENDING_LEASE
    while True:
        with db.session() as session:
            stale_ones = (Message.status == "sending", Message.sending_started_at < stale_since)
            if session.scalar(select(Message.id).where(*stale_ones).limit(1)) is None:
                return reconciled  # the usual case: no lock taken
            take_write_lock(session)
            stale = session.scalars(
                select(Message)
                .where(*stale_ones)
                .order_by(Message.sending_started_at, Message.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            for message in stale:
                message.version += 1
                message.updated_at = now
                _mark_failed(session, message, INTERRUPTED, now, reason="interrupted")
        reconciled += len(stale)
        if len(stale) < limit:
            return reconciled
