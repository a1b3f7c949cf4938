"""A worker SIGKILLed in the middle of its work, then started again.

SIGKILL gives it no chance to finish. A consumer dies between a batch's commit and its ack,
or with a batch half applied: the restarted one takes up everything left (nothing lost) and
the inbox keeps every effect to one. A sender dies with a group of emails marked `sending`
and more claimed: each SMTP conversation's marks tell, once the group's lease ends, which
of the group the server accepted (sent, announced once) and which never began (sent then);
at most one, the email in conversation at the kill, is in doubt (it may have arrived) and
is never sent again. The rest of the claim goes out when the claim ends; no email ever
reaches the SMTP server twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import requests

from services.notifications.outcomes import SENDING_LEASE
from services.notifications.sender import BATCH_SIZE, CLAIM_LEASE, SEND_GROUP
from shared.events import utcnow
from tests.crm_run import eventually
from tests.faults.system import (
    System,
    count_effects,
    expected_effects,
    new_ticket,
    settled_effects,
)

# One PostgreSQL-backed system at a time with the end-to-end and security tests (their
# group): with the fuzz tests' system, three at once would pass PostgreSQL's 100 connections.
pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("crm-run")]
TICKETS = 300
TIMEOUT = 30


class TicketStream(threading.Thread):
    """Tickets from new addresses posted through the gateway, in the background."""

    def __init__(self, system: System, domain: str, count: int = TICKETS) -> None:
        super().__init__(daemon=True)
        self.session, self.api = system.login(), system.api
        self.domain, self.count = domain, count
        self.statuses: list[int | str] = []

    def run(self) -> None:
        for number in range(self.count):
            try:
                answer = self.session.post(
                    f"{self.api}/tickets", json=new_ticket(number, self.domain), timeout=TIMEOUT
                )
                self.statuses.append(answer.status_code)
            except requests.RequestException as error:
                self.statuses.append(repr(error))

    @property
    def addresses(self) -> list[str]:
        return [new_ticket(n, self.domain)["requester"]["email"] for n in range(self.count)]


def kill_when(
    system: System, process: str, progress: Callable[[], int], low: int, high: int
) -> int:
    """SIGKILL `process` once `progress()` is at least `low`; fails if it got past `high`
    first (then the kill was not mid-stream). The progress seen at the kill."""
    seen = eventually(progress, lambda done: done >= low, timeout=60, pause=0.02)
    assert low <= seen < high, f"{process} was at {seen}, not mid-stream ({low}..{high})"
    system.kill(process)
    return seen


def assert_each_effect_once(system: System, domain: str, tickets: list[str]) -> None:
    missing, twice = settled_effects(system, domain, expected_effects([], tickets), 90)
    assert not any(missing.values()), f"effects missing: {missing}"
    assert not any(twice.values()), f"effects duplicated: {twice}"
    dead = {name: system.dead_letters(name) for name in system.consumers()}
    assert not any(dead.values()), f"good events dead-lettered: {dead}"


def test_a_consumer_killed_mid_stream_and_restarted_applies_every_event_once(
    system: System,
) -> None:
    domain = "killed-consumer.example"
    stream = TicketStream(system, domain)

    def timeline_entries() -> int:
        sql = "SELECT COUNT(*) FROM interactions WHERE event_type = 'ticket.created'"
        return system.query("contacts", sql)[0][0]

    stream.start()
    applied_at_kill = kill_when(system, "contacts-worker", timeline_entries, 30, TICKETS)
    time.sleep(1)  # the stream goes on while no one consumes
    system.start_process("contacts-worker")
    system.wait_for_consumer("contacts", time.monotonic() + 60)
    stream.join(timeout=120)

    assert stream.statuses == [201] * TICKETS
    assert_each_effect_once(system, domain, stream.addresses)
    print(f"contacts worker killed after {applied_at_kill} of {TICKETS} tickets: no loss, no twice")
    system.assert_running()


def messages_of(system: System, domain: str) -> dict[str, tuple[str, datetime | None]]:
    """{address: (status, when it was claimed until or began sending)} of the messages to
    addresses at `domain`."""
    rows = system.query(
        "notifications",
        "SELECT to_key, status, sending_started_at, next_attempt_at FROM messages "
        "WHERE to_key LIKE ?",
        f"%@{domain}",
    )
    return {
        to: (status, _aware(started if status == "sending" else claimed_until))
        for to, status, started, claimed_until in rows
    }


def _aware(stored: str | datetime | None) -> datetime | None:
    """A stored moment as an aware datetime (SQLite gives naive text: UTC by the services'
    convention; PostgreSQL a datetime)."""
    if stored is None:
        return None
    moment = stored if isinstance(stored, datetime) else datetime.fromisoformat(stored)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def fast_forward_sender(system: System, seconds: float) -> None:
    """One pass of the sender as if `seconds` had gone by: claims and leases ended."""
    from services.notifications.app import make_database
    from services.notifications.sender import send_due
    from shared.config import load_settings

    settings = load_settings("notifications", environ=system.env)
    db = make_database(settings)
    try:
        send_due(db, settings, now=utcnow() + timedelta(seconds=seconds))
    finally:
        db.dispose()


def marks_of(system: System, domain: str) -> dict[str, tuple[bool, bool]]:
    """{address: (its SMTP conversation marked begun, the server's acceptance marked)}."""
    sql = (
        "SELECT to_key, smtp_started_at IS NOT NULL, submitted_at IS NOT NULL FROM messages "
        "WHERE to_key LIKE ?"
    )
    return {
        to: (bool(begun), bool(taken))
        for to, begun, taken in system.query("notifications", sql, f"%@{domain}")
    }


def announced_sent(system: System, domain: str) -> dict[str, int]:
    """{address: how many `email.sent` events its message has in the outbox}."""
    sql = (
        "SELECT m.to_key, COUNT(*) FROM outbox o JOIN messages m ON m.id = o.aggregate_id "
        "WHERE o.event_type = 'email.sent' AND m.to_key LIKE ? GROUP BY 1"
    )
    return dict(system.query("notifications", sql, f"%@{domain}"))


def test_a_sender_killed_mid_batch_sends_no_email_twice_and_leaves_at_most_one_in_doubt(
    system: System,
) -> None:
    """What the killed sender held stays held until its leases end (no second copy): the
    group it had marked `sending` and the rest of its claim. Then the group's marks settle
    it: accepted ones sent, never begun ones sent now, at most one failed in doubt. Everything
    else goes out once, at once, from the restarted worker."""
    domain = "killed-sender.example"
    stream = TicketStream(system, domain)
    system.kill("notifications-worker")  # the acknowledgements pile up, sent as one batch
    stream.start()
    stream.join(timeout=120)
    assert stream.statuses == [201] * TICKETS

    def emails() -> int:  # only this test's acknowledgements go out
        return len(list(system.mail_dir.glob("*.eml")))

    system.start_process("notifications-worker")
    # Mid-group (groups of 20): some of it accepted, one in conversation, some never begun.
    emails_at_kill = kill_when(system, "notifications-worker", emails, 30, TICKETS)
    killed_at = utcnow()
    system.start_process("notifications-worker")

    def held(status: str, at: datetime | None) -> bool:
        """Still in the dead sender's hands: its claim, or its group marked `sending`."""
        if status == "queued":  # a claim made before the kill ends within CLAIM_LEASE of it
            return at is not None and killed_at < at <= killed_at + CLAIM_LEASE
        return status == "sending" and at is not None and at < killed_at

    def settled(found: dict[str, tuple[str, datetime | None]]) -> bool:
        return len(found) == TICKETS and all(s == "sent" or held(s, at) for s, at in found.values())

    found = eventually(lambda: messages_of(system, domain), settled, 90)
    mailed = count_effects(system, domain)["email at the SMTP server"]
    by_status = {
        status: [to for to, (state, _) in found.items() if state == status]
        for status in ("sent", "sending", "queued")
    }
    assert sum(map(len, by_status.values())) == TICKETS, found
    group, claimed = by_status["sending"], by_status["queued"]
    assert len(group) <= SEND_GROUP and len(claimed) <= BATCH_SIZE
    marks = marks_of(system, domain)
    accepted = [to for to in group if marks[to][1]]
    in_doubt = [to for to in group if marks[to] == (True, False)]
    never_begun = [to for to in group if not marks[to][0]]
    assert len(in_doubt) <= 1, f"{len(in_doubt)} emails in doubt: {in_doubt}"
    assert all(mailed.get(to) == 1 for to in by_status["sent"] + accepted)
    assert all(mailed.get(to, 0) <= 1 for to in in_doubt)
    assert not any(mailed.get(to) for to in never_begun + claimed)

    fast_forward_sender(system, max(CLAIM_LEASE, SENDING_LEASE).total_seconds() + 1)
    after = messages_of(system, domain)
    mailed = count_effects(system, domain)["email at the SMTP server"]
    print(
        f"sender killed after {emails_at_kill} emails: its group of {len(group)} settled by "
        f"its marks ({len(accepted)} accepted, {len(never_begun)} never begun and sent now, "
        f"{len(in_doubt)} in doubt, {sum(mailed.get(to, 0) for to in in_doubt)} of it had "
        f"arrived), {len(claimed)} held by its claim and sent when it ended; duplicates "
        f"{sum(1 for count in mailed.values() if count > 1)}"
    )
    assert {to: status for to, (status, _) in after.items() if status != "sent"} == {
        to: "failed" for to in in_doubt
    }
    assert all(mailed.get(to) == 1 for to in after if to not in in_doubt)
    assert max(mailed.values()) == 1
    assert announced_sent(system, domain) == {to: 1 for to in after if to not in in_doubt}
    system.assert_running()
