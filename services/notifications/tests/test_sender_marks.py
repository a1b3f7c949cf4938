"""The sender's per-conversation marks: a sender killed outright leaves one email in doubt.

The kills are real: `send_due` runs in a forked process that SIGKILLs itself at a chosen
point of one message's SMTP conversation (no `finally`, no cleanup), against a real SMTP
server and the real database; a later pass settles what it left by the marks.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from services.notifications.mailer import Mailer, Prepared, parse_smtp_url
from services.notifications.models import Message
from services.notifications.outcomes import INTERRUPTED, SENDING_LEASE, reconcile_interrupted
from services.notifications.sender import CLAIM_LEASE, claim_due, send_due, start_group
from services.notifications.tests.test_sender import T0, at, copies, load, mailer_for, queue
from shared.db import make_engine
from shared.migrations import upgrade
from shared.testing import outbox_events

AFTER_LEASES = T0 + max(SENDING_LEASE, CLAIM_LEASE) + timedelta(seconds=1)


@pytest.fixture
def settings(app: Any) -> Any:
    return app.extensions["crm.settings"]


class KillingMailer(Mailer):
    """SIGKILLs its own process at `point` of the message `victim`: "begun" (before MAIL
    FROM, its conversation marked begun) or "accepted" (the server has just taken it)."""

    def __init__(self, url: str, victim: str, point: str) -> None:
        super().__init__(parse_smtp_url(url))
        self.victim, self.point, self.current = victim, point, ""

    def submit(self, prepared: Prepared, meanwhile: Any = None) -> None:
        self.current = prepared.message_id
        if self.current == self.victim and self.point == "begun":
            os.kill(os.getpid(), signal.SIGKILL)
        super().submit(prepared, meanwhile)

    def confirm(self, meanwhile: Any = None) -> None:
        super().confirm(meanwhile)
        if self.current == self.victim and self.point == "accepted":
            os.kill(os.getpid(), signal.SIGKILL)


def _send_until_killed(db: Any, settings: Any, url: str, victim: str, point: str) -> None:
    db.engine.dispose(close=False)  # the parent's pooled connections stay the parent's
    send_due(db, settings, KillingMailer(url, victim, point), now=T0)


def send_and_get_killed(db: Any, settings: Any, url: str, victim: str, point: str) -> None:
    """Run a sender in a forked process until it SIGKILLs itself at `victim`."""
    process = multiprocessing.get_context("fork").Process(
        target=_send_until_killed, args=(db, settings, url, victim, point)
    )
    process.start()
    process.join(120)
    if process.exitcode is None:
        process.kill()
        process.join()
    assert process.exitcode == -signal.SIGKILL


def statuses(db: Any, ids: list[str]) -> list[str]:
    with db.session() as session:
        found = dict(session.execute(sa.select(Message.id, Message.status)).all())
    return [found[message_id] for message_id in ids]


@pytest.mark.parametrize(
    ("point", "refused_first"), [("accepted", False), ("begun", True)], ids=["accepted", "begun"]
)
def test_a_sender_killed_mid_group_leaves_only_the_message_in_its_conversation_in_doubt(
    db, settings, smtp_server, point, refused_first
):
    ids = [queue(db, to=f"user{n}@example.com") for n in range(30)]
    victim = ids[12]  # in the first group of 20; the rest of the batch is claimed
    if refused_first:  # its refusal was never written: it must not count as in doubt
        smtp_server.refuse_next(1, "451 4.3.0 Mailbox busy, try later")
    send_and_get_killed(db, settings, smtp_server.url, victim, point)
    arrived = 1 if point == "accepted" else 0
    assert smtp_server.count() == 12 - refused_first + arrived
    assert set(statuses(db, ids[:20])) == {"sending"}  # no outcome was written yet

    assert send_due(db, settings, mailer_for(smtp_server), now=AFTER_LEASES) == 17 + refused_first
    assert statuses(db, ids) == ["sent"] * 12 + ["failed"] + ["sent"] * 17
    message = load(db, victim)
    assert (message.last_error, message.attempts) == (INTERRUPTED, 1)
    assert copies(smtp_server, victim) == arrived
    assert all(copies(smtp_server, message_id) == 1 for message_id in ids if message_id != victim)
    sent = Counter(data["message_id"] for _, data in outbox_events(db, "email.sent"))
    assert set(sent) == set(ids) - {victim} and set(sent.values()) == {1}
    [(_, failed)] = outbox_events(db, "email.failed")
    assert failed["message_id"] == victim and failed["uncertain"] is True
    assert send_due(db, settings, mailer_for(smtp_server), now=AFTER_LEASES + SENDING_LEASE) == 0
    assert len(outbox_events(db)) == 30


def test_messages_accepted_before_a_kill_are_recorded_sent_with_their_message_id(
    db, settings, smtp_server
):
    ids = [queue(db, to=f"user{n}@example.com") for n in range(4)]
    send_and_get_killed(db, settings, smtp_server.url, ids[2], "begun")
    first = load(db, ids[0])
    assert first.status == "sending" and at(first.submitted_at) == T0
    assert load(db, ids[2]).submitted_at is None and load(db, ids[3]).smtp_started_at is None
    reconcile_interrupted(db, AFTER_LEASES)
    assert statuses(db, ids) == ["sent", "sent", "failed", "queued"]
    reconciled = load(db, ids[0])
    assert reconciled.smtp_message_id == f"<{ids[0]}@example.com>"
    assert copies(smtp_server, ids[0]) == 1 and at(reconciled.sent_at) == AFTER_LEASES
    announced = {data["message_id"]: data for _, data in outbox_events(db, "email.sent")}
    assert set(announced) == {ids[0], ids[1]}
    assert announced[ids[0]]["smtp_message_id"] == reconciled.smtp_message_id
    assert load(db, ids[3]).attempts == 0  # it never reached the server


class WatchingMailer(Mailer):
    """Notes, as each conversation begins, the marks the database holds at that moment."""

    def __init__(self, url: str, db: Any) -> None:
        super().__init__(parse_smtp_url(url))
        self.db, self.seen = db, []

    def submit(self, prepared: Prepared, meanwhile: Any = None) -> None:
        with self.db.session() as session:
            rows = session.execute(
                sa.select(Message.subject, Message.smtp_started_at, Message.submitted_at)
            ).all()
        marks = {subject: (begun is not None, taken is not None) for subject, begun, taken in rows}
        self.seen.append((prepared.message_id, marks))
        super().submit(prepared, meanwhile)


def test_each_conversation_is_marked_begun_and_the_last_accepted_before_it_starts(
    db, settings, smtp_server
):
    for subject in ("a", "b", "c"):
        queue(db, subject=subject)
    smtp_server.refuse_next(1, "554 5.7.1 Message rejected as spam", stage="rcpt")
    mailer = WatchingMailer(smtp_server.url, db)
    assert send_due(db, settings, mailer, now=T0) == 3
    nothing = (False, False)
    assert [marks for _, marks in mailer.seen] == [
        {"a": (True, False), "b": nothing, "c": nothing},
        {"a": nothing, "b": (True, False), "c": nothing},  # a was refused: not begun
        {"a": nothing, "b": (True, True), "c": (True, False)},
    ]
    with db.session() as session:
        rows = session.execute(sa.select(Message.subject, Message.status, Message.sent_at)).all()
    assert sorted((subject, status) for subject, status, _ in rows) == [
        ("a", "failed"),
        ("b", "sent"),
        ("c", "sent"),
    ]
    assert all(at(sent_at) == T0 for subject, _, sent_at in rows if subject != "a")
    with db.session() as session:  # the group's last acceptance is marked before its outcome
        last = session.scalars(sa.select(Message).where(Message.subject == "c")).one()
    assert at(last.submitted_at) == T0


class OvertakenMailer(Mailer):
    """While the first message is in conversation, its attempt outlives the lease: another
    sender reconciles the group and takes the second message for an attempt of its own."""

    def __init__(self, url: str, db: Any, second: str) -> None:
        super().__init__(parse_smtp_url(url))
        self.db, self.second, self.overtaken = db, second, False

    def submit(self, prepared: Prepared, meanwhile: Any = None) -> None:
        if not self.overtaken:
            self.overtaken = True
            later = T0 + SENDING_LEASE + timedelta(seconds=1)
            reconcile_interrupted(self.db, later)
            claim = claim_due(self.db, later, 10)
            with self.db.session() as session:
                started = start_group(session, claim.ids, claim, later)
            assert [outgoing.id for outgoing, _ in started] == [self.second]
        super().submit(prepared, meanwhile)


def test_a_slow_sender_never_sends_a_message_another_sender_has_taken_over(
    db, settings, smtp_server
):
    first, second = queue(db, subject="first"), queue(db, subject="second")
    send_due(db, settings, OvertakenMailer(smtp_server.url, db, second), now=T0)
    assert copies(smtp_server, first) == 1 and copies(smtp_server, second) == 0
    assert load(db, first).status == "failed"  # reconciled in doubt; its late verdict dropped
    assert load(db, second).status == "sending" and load(db, second).attempts == 1


def test_upgrading_keeps_a_message_left_sending_by_an_older_sender_in_doubt(database_url):
    migrations = Path(__file__).resolve().parents[1] / "migrations"
    upgrade(migrations, database_url, "0002")
    engine = make_engine(database_url)
    columns = "id, to_address, to_key, from_address, subject, body_text, category, headers"
    row = "'{0}', 'a@example.com', 'a@example.com', 'crm@example.com', 's', 'b', 'x', '{{}}'"
    state = "status, attempts, sending_started_at, open_count, click_count, version"
    try:
        with engine.begin() as connection:
            for message_id, status in (("m1", "sending"), ("m2", "queued")):
                connection.exec_driver_sql(
                    f"INSERT INTO messages ({columns}, {state}, created_at, updated_at) VALUES "
                    f"({row.format(message_id)}, '{status}', 1, '2026-06-01 09:00:00', 0, 0, 1, "
                    "'2026-06-01 09:00:00', '2026-06-01 09:00:00')"
                )
        upgrade(migrations, database_url)
        with engine.connect() as connection:
            marks = connection.exec_driver_sql(
                "SELECT id, smtp_started_at IS NOT NULL, submitted_at FROM messages ORDER BY id"
            ).all()
    finally:
        engine.dispose()
    assert [tuple(mark) for mark in marks] == [("m1", True, None), ("m2", False, None)]
