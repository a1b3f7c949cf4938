"""The SLA sweep: each warning and breach published once, pauses respected, both databases."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from services.support.models import Base, Ticket
from services.support.sweep import sweep_sla
from services.support.tests.test_sla import (
    OFFICE,
    T0,
    add_policy,
    at,
    berlin,
    change,
    hours,
    load,
    open_ticket,
)
from shared.db import Database


def alerts(db: Database) -> list[tuple[str, str, str]]:
    """(event type, ticket id, target) of every SLA alert in the outbox, oldest first."""
    table = db.outbox
    statement = (
        sa.select(table.c.event_type, table.c.payload)
        .where(table.c.event_type.in_(["ticket.sla_warning", "ticket.sla_breached"]))
        .order_by(table.c.position)
    )
    with db.engine.connect() as connection:
        rows = connection.execute(statement).all()
    return [
        (kind, json.loads(payload)["data"]["ticket_id"], json.loads(payload)["data"]["target"])
        for kind, payload in rows
    ]


def kinds(db: Database) -> list[tuple[str, str]]:
    return [(kind.removeprefix("ticket.sla_"), target) for kind, _, target in alerts(db)]


def test_each_warning_and_breach_is_published_once_when_due(db):
    add_policy(db, first_response=60, resolution=480)
    ticket_id = open_ticket(db)
    assert sweep_sla(db, T0 + timedelta(minutes=47)) == 0
    assert sweep_sla(db, T0 + timedelta(minutes=48)) == 1
    assert sweep_sla(db, T0 + timedelta(minutes=50)) == 0
    assert sweep_sla(db, T0 + hours(1)) == 1
    assert sweep_sla(db, T0 + hours(6.4)) == 1
    assert sweep_sla(db, T0 + hours(8)) == 1
    assert sweep_sla(db, T0 + hours(30)) == 0
    assert kinds(db) == [
        ("warning", "first_response"),
        ("breached", "first_response"),
        ("warning", "resolution"),
        ("breached", "resolution"),
    ]
    ticket = load(db, ticket_id)
    assert ticket.sla_breached is True and ticket.version == 5
    assert at(ticket.first_response_warned_at) == T0 + timedelta(minutes=48)
    assert at(ticket.first_response_breached_at) == T0 + hours(1)
    assert at(ticket.resolution_warned_at) == T0 + hours(6.4)
    assert at(ticket.resolution_breached_at) == T0 + hours(8)


def test_an_alert_carries_the_ticket_and_the_target(db):
    add_policy(db, first_response=60, resolution=480)
    ticket_id = open_ticket(db, priority="normal")
    change(db, ticket_id, T0, assignee_id="00000000-0000-4000-8000-0000000000a1")
    sweep_sla(db, T0 + hours(1))
    with db.engine.connect() as connection:
        payload = connection.execute(sa.select(db.outbox.c.payload)).scalar_one()
    envelope = json.loads(payload)
    assert envelope["type"] == "ticket.sla_breached" and envelope["aggregate_id"] == ticket_id
    assert envelope["aggregate_version"] == 3  # created 1, assigned 2, flagged 3
    data = envelope["data"]
    assert data["ticket_id"] == ticket_id and data["target"] == "first_response"
    assert data["contact_id"] == "00000000-0000-4000-8000-0000000000c1"
    assert data["assignee_id"] == "00000000-0000-4000-8000-0000000000a1"
    assert data["priority"] == "normal" and data["subject"] == "Printer on fire"
    assert data["due_at"] == "2026-06-01T09:00:00Z" and data["sla_breached"] is True


def test_a_breach_found_before_its_warning_is_published_alone(db):
    add_policy(db, first_response=60, resolution=480)
    ticket_id = open_ticket(db)
    assert sweep_sla(db, T0 + hours(9)) == 2
    assert sweep_sla(db, T0 + hours(10)) == 0
    assert kinds(db) == [("breached", "first_response"), ("breached", "resolution")]
    ticket = load(db, ticket_id)
    assert ticket.first_response_warned_at is None and ticket.resolution_warned_at is None


def test_an_answered_ticket_gets_no_first_response_alerts(db):
    add_policy(db, first_response=60, resolution=480)
    ticket_id = open_ticket(db)
    change(db, ticket_id, T0 + hours(0.5), first_responded_at=T0 + hours(0.5), status="open")
    assert sweep_sla(db, T0 + hours(7)) == 1
    assert kinds(db) == [("warning", "resolution")]


def test_a_ticket_past_its_deadline_while_pending_is_not_flagged(db):
    add_policy(db, first_response=60, resolution=480)
    ticket_id = open_ticket(db)
    change(db, ticket_id, T0 + hours(0.5), first_responded_at=T0 + hours(0.5), status="pending")
    assert sweep_sla(db, T0 + hours(20)) == 0
    # Back to open after 19.5 paused hours: 7.5 hours of the target remain.
    change(db, ticket_id, T0 + hours(20), status="open")
    assert sweep_sla(db, T0 + hours(27.4)) == 1  # the warning: 6.4 hours ran
    assert sweep_sla(db, T0 + hours(27.49)) == 0
    assert sweep_sla(db, T0 + hours(27.5)) == 1
    assert kinds(db) == [("warning", "resolution"), ("breached", "resolution")]


def test_a_pending_ticket_without_a_first_response_is_still_flagged_for_it(db):
    add_policy(db, first_response=60, resolution=480)
    ticket_id = open_ticket(db)
    change(db, ticket_id, T0 + hours(0.2), status="pending")
    assert sweep_sla(db, T0 + hours(2)) == 1
    assert kinds(db) == [("breached", "first_response")]
    assert load(db, ticket_id).resolution_breached_at is None


def test_pause_and_resume_move_the_breach_by_the_paused_business_time(db):
    add_policy(db, first_response=60, resolution=480, calendar=OFFICE)
    ticket_id = open_ticket(db, created_at=berlin(2026, 6, 1, 9, 0))
    change(db, ticket_id, berlin(2026, 6, 1, 9, 30), first_responded_at=berlin(2026, 6, 1, 9, 30))
    change(db, ticket_id, berlin(2026, 6, 1, 10, 0), status="pending")
    change(db, ticket_id, berlin(2026, 6, 2, 10, 0), status="open")
    assert sweep_sla(db, berlin(2026, 6, 1, 17, 0)) == 0  # the deadline before the pause
    assert sweep_sla(db, berlin(2026, 6, 2, 16, 59)) == 1  # the warning only
    assert sweep_sla(db, berlin(2026, 6, 2, 17, 0)) == 1
    assert kinds(db) == [("warning", "resolution"), ("breached", "resolution")]


def test_a_reopened_ticket_continues_its_clock(db):
    add_policy(db, first_response=60, resolution=480)
    ticket_id = open_ticket(db)
    change(db, ticket_id, T0 + hours(0.5), first_responded_at=T0 + hours(0.5))
    change(db, ticket_id, T0 + hours(2), status="resolved")
    assert sweep_sla(db, T0 + hours(9)) == 0
    change(db, ticket_id, T0 + hours(10), status="open")
    # 2 hours ran before: the warning (6.4 hours) is due 4.4 hours after the reopen.
    assert sweep_sla(db, T0 + hours(14.39)) == 0
    assert sweep_sla(db, T0 + hours(14.4)) == 1
    assert sweep_sla(db, T0 + hours(15.99)) == 0
    assert sweep_sla(db, T0 + hours(16)) == 1
    assert kinds(db) == [("warning", "resolution"), ("breached", "resolution")]


def test_a_weekend_in_the_middle_of_a_target_is_not_counted(db):
    add_policy(db, first_response=60, resolution=120, calendar=OFFICE)
    open_ticket(db, created_at=berlin(2026, 6, 5, 16, 30))  # a Friday
    assert sweep_sla(db, berlin(2026, 6, 6, 12, 0)) == 0  # Saturday: 2 wall hours later
    # Friday's 30 minutes count, then Monday from 09:00.
    assert sweep_sla(db, berlin(2026, 6, 8, 9, 17)) == 0
    assert sweep_sla(db, berlin(2026, 6, 8, 9, 18)) == 1  # 48 minutes: first response warning
    assert sweep_sla(db, berlin(2026, 6, 8, 10, 6)) == 2  # its breach, resolution warning
    assert sweep_sla(db, berlin(2026, 6, 8, 10, 29)) == 0
    assert sweep_sla(db, berlin(2026, 6, 8, 10, 30)) == 1
    assert kinds(db) == [
        ("warning", "first_response"),
        ("breached", "first_response"),
        ("warning", "resolution"),
        ("breached", "resolution"),
    ]


def test_resolved_and_policyless_tickets_are_not_swept(db):
    add_policy(db, "high", first_response=60, resolution=480)
    open_ticket(db, priority="normal")  # no policy
    done = open_ticket(db, priority="high")
    change(db, done, T0 + hours(0.5), first_responded_at=T0 + hours(0.5), status="closed")
    assert sweep_sla(db, T0 + hours(50)) == 0


def _sweep_in_thread(url: str, now, barrier, results: list, errors: list) -> None:
    database = Database("support", url, Base.metadata)
    try:
        barrier.wait(timeout=30)
        results.append(sweep_sla(database, now, batch_size=7))
    except Exception as error:  # reported by the test
        errors.append(error)
    finally:
        database.dispose()


def test_concurrent_sweeps_publish_each_alert_exactly_once(db):
    add_policy(db, first_response=60, resolution=480)
    early = [open_ticket(db, created_at=T0) for _ in range(60)]
    late = [open_ticket(db, created_at=T0 + timedelta(hours=6, minutes=10)) for _ in range(60)]
    now = T0 + hours(7)
    url = db.engine.url.render_as_string(hide_password=False)
    barrier, results, errors = threading.Barrier(4), [], []
    threads = [
        threading.Thread(target=_sweep_in_thread, args=(url, now, barrier, results, errors))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(results) == 4
    published = Counter(alerts(db))
    expected = {("ticket.sla_breached", t, "first_response") for t in early}
    expected |= {("ticket.sla_warning", t, "resolution") for t in early}
    expected |= {("ticket.sla_warning", t, "first_response") for t in late}
    assert set(published) == expected
    assert set(published.values()) == {1}
    assert sum(results) == len(expected) == 180
    assert sweep_sla(db, now) == 0
    with db.session() as session:
        versions = set(session.scalars(sa.select(Ticket.version)))
    assert versions == {2, 3}  # one bump per alert


def test_a_sweep_skips_a_ticket_another_transaction_holds(db):
    if not db.is_postgres:
        pytest.skip("row locks are PostgreSQL's; SQLite runs one writer at a time")
    add_policy(db, first_response=60, resolution=480)
    held, free = open_ticket(db), open_ticket(db)
    with db.engine.connect() as connection, connection.begin():
        connection.execute(sa.select(Ticket.id).where(Ticket.id == held).with_for_update())
        assert sweep_sla(db, T0 + hours(1)) == 1  # did not wait for the lock
        assert {ticket for _, ticket, _ in alerts(db)} == {free}
    assert sweep_sla(db, T0 + hours(1)) == 1
    assert Counter(ticket for _, ticket, _ in alerts(db)) == {held: 1, free: 1}
