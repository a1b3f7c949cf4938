"""What a delivery attempt came to, written into the delivery log with its email.* event.

- accepted: `sent`, `email.sent` (one UPDATE and one INSERT for a whole group);
- 4xx or a broken connection before the data went out: queued again after RETRY_DELAYS,
  `failed` (`email.failed`, reason `retries_exhausted`) after the last;
- 5xx: `failed` (`email.failed`, reason `rejected`), or `bounced` (`email.bounced`,
  `hard: true`) for an unknown mailbox, whose address is suppressed for marketing mail;
- no answer after the data went out: `failed` (`email.failed`, `uncertain: true`), never
  resent.

Those are written a group at a time; each conversation's own marks (`SubmissionMarks`) are
committed as it goes, so a message found still `sending` past SENDING_LEASE
(`reconcile_interrupted`: its sender died) is settled by them: accepted by the server, it is
`sent` (`email.sent`); never begun or refused, it is queued again; begun and not answered
(at most one per dead sender: the one in its SMTP conversation), it may have arrived, so it
is `failed` (`uncertain: true`) and never resent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from services.notifications.mailer import (
    PermanentSmtpError,
    SmtpError,
    TransientSmtpError,
    UncertainSmtpError,
)
from services.notifications.mime import message_id_header
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
    """Settle messages whose attempt began over SENDING_LEASE ago by their marks: sent,
    queued again (never begun) or failed in doubt (never resent); how many."""
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
            accepted = {
                m.id: message_id_header(m.id, m.from_address)
                for m in stale
                if m.submitted_at is not None
            }
            for message in stale:
                if message.id not in accepted:
                    _settle_unsubmitted(session, message, now)
            if accepted:
                _mark_sent(session, accepted, now)
        log.warning(
            "reconciled %d interrupted message(s): %d accepted by the server, %d queued again",
            len(stale),
            len(accepted),
            sum(1 for message in stale if message.status == "queued"),
        )
        reconciled += len(stale)
        if len(stale) < limit:
            return reconciled


def _settle_unsubmitted(session: Session, message: Message, now: datetime) -> None:
    """A dead sender's message the server never accepted: queued again if its conversation
    never began (or was refused), else in doubt: it may have arrived."""
    message.version += 1
    message.updated_at = now
    if message.smtp_started_at is not None:
        _mark_failed(session, message, INTERRUPTED, now, reason="interrupted")
        return
    message.status = "queued"
    message.sending_started_at = None
    message.next_attempt_at = None
    message.attempts -= 1  # no attempt reached the server (or its refusal was not kept)


class SubmissionMarks:
    """Each SMTP conversation's marks, one tiny committed UPDATE on a connection of their own
    (raw DBAPI: this runs once per email, between two conversations).

    `write()` marks the next message's conversation as begun and, in the same statement,
    writes the verdict of the one before: accepted (`submitted_at`) or
    refused (its begun mark cleared: the server does not have it). A process killed outright
    therefore leaves at most one message begun and unsettled: the one in the conversation.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._connection: Any = None
        self.versions: dict[str, int] = {}
        self._isolation: str | None = ""  # pysqlite's, given back with the connection
        dialect: Dialect = db.engine.dialect
        moment_type = Message.__table__.c.submitted_at.type.dialect_impl(dialect)
        self._moment = moment_type.bind_processor(dialect)  # as the ORM would store it
        self._sql = _MARK_SQL.format(p="%s" if db.is_postgres else "?")

    def track(self, versions: dict[str, int]) -> None:
        """The messages of the group being sent, each with the version its attempt gave it."""
        self.versions = versions

    def write(self, message_id: str | None, before: Outcome | None, now: datetime) -> bool:
        """Mark `message_id`'s conversation begun and write `before`'s verdict, each only if
        still at its attempt's version; False when `message_id` is no longer this attempt's
        (reconciled, maybe taken by another sender: do not send it)."""
        accepted = before if before is not None and before.error is None else None
        refused = before if before is not None and _refused(before.error) else None
        before_id = before and before.message_id
        moment = self._moment(now) if self._moment else now
        parameters = (
            *(message_id, moment, refused and refused.message_id),
            *(accepted and accepted.message_id, moment),
            *(message_id, before_id, message_id),
            *(self.versions.get(message_id or ""), self.versions.get(before_id or "")),
        )
        connection = self._open()
        cursor = connection.cursor()
        try:
            cursor.execute(self._sql, parameters)
            marked = [row[0] for row in cursor.fetchall()]
        finally:
            cursor.close()
        return message_id in marked

    def _open(self) -> Any:
        if self._connection is None:
            connection = self.db.engine.raw_connection()
            driver = connection.driver_connection
            if self.db.is_postgres:
                # Marks guard against a killed sender process, not a crashed database: a
                # commit is kept by the server whatever becomes of its client, so no WAL
                # flush (an fsync per email) is awaited. A server crash may lose the last
                # fraction of a second of marks; a begun mark lost so could have its email
                # queued again. (On SQLite, WAL with synchronous=NORMAL: the same trade.)
                with connection.cursor() as cursor:
                    cursor.execute("SET synchronous_commit = off")
                connection.commit()
                driver.autocommit = True  # one round trip a mark: the UPDATE commits itself
            else:
                self._isolation = driver.isolation_level
                driver.isolation_level = None  # autocommit: the UPDATE is its own transaction
            self._connection = connection
        return self._connection

    def close(self) -> None:
        """Give the connection back to the pool as it was (or drop it if it broke)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        driver = connection.driver_connection
        try:
            if self.db.is_postgres:
                with connection.cursor() as cursor:
                    cursor.execute("RESET synchronous_commit")
                driver.autocommit = False
            else:
                driver.isolation_level = self._isolation
        except Exception:  # broken: the pool must not hand it out again
            log.warning("dropping the submission marks' connection", exc_info=True)
            connection.invalidate()
        connection.close()


def _refused(error: SmtpError | None) -> bool:
    """Whether the server certainly does not have the message (it may be tried again)."""
    return error is not None and not isinstance(error, UncertainSmtpError)


# Placeholders: begun id, now, refused id; accepted id, now; begun id, the one before's id,
# begun id, begun's version, the one before's version. Rows are found by primary key; a
# version still the attempt's means still `sending` by it. No indexed column changes (the
# Message-ID is derived from the id), so PostgreSQL updates the row in place (HOT).
_MARK_SQL = (
    "UPDATE messages SET"
    " smtp_started_at = CASE WHEN id = {p} THEN {p} WHEN id = {p} THEN NULL"
    " ELSE smtp_started_at END,"
    " submitted_at = CASE WHEN id = {p} THEN {p} ELSE submitted_at END"
    " WHERE id IN ({p}, {p}) AND version = CASE WHEN id = {p} THEN {p} ELSE {p} END"
    " RETURNING id"
)
