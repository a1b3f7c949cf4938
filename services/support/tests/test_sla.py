"""SLA clocks on tickets: targets, pauses, stops, reopens, priority changes, both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from services.support import sla
from services.support.models import SlaPolicy, Ticket
from shared.db import Database
from shared.testing import outbox_events

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = {"timezone": "Europe/Berlin", "days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)  # a Monday


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def berlin(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN).astimezone(UTC)


def add_policy(
    db: Database,
    priority: str = "normal",
    first_response: int = 60,
    resolution: int = 480,
    calendar: dict[str, Any] | None = None,
) -> str:
    """A policy inserted directly (the policies API has its own tests); its id."""
    with db.session() as session:
        policy = SlaPolicy(
            name=f"{priority} SLA",
            priority=priority,
            first_response_minutes=first_response,
            resolution_minutes=resolution,
            calendar=calendar,
        )
        session.add(policy)
        session.flush()
        return policy.id


def open_ticket(
    db: Database, created_at: datetime = T0, priority: str = "normal", status: str = "new"
) -> str:
    """A ticket inserted directly, its SLA set as the tickets API does on create; its id."""
    with db.session() as session:
        ticket = Ticket(
            subject="Printer on fire",
            priority=priority,
            status=status,
            contact_id="00000000-0000-4000-8000-0000000000c1",
            created_at=created_at,
            updated_at=created_at,
        )
        session.add(ticket)
        sla.refresh(session, ticket, created_at)
        session.flush()
        return ticket.id


def change(db: Database, ticket_id: str, now: datetime, **fields: Any) -> Ticket:
    """Change a ticket as the tickets API does (locked, refreshed, version bumped)."""
    with db.session() as session:
        ticket = session.scalars(
            select(Ticket).where(Ticket.id == ticket_id).with_for_update()
        ).one()
        previous = ticket.status
        for name, value in fields.items():
            setattr(ticket, name, value)
        sla.refresh(session, ticket, now, previous_status=previous)
        ticket.version += 1
        return ticket


def load(db: Database, ticket_id: str) -> Ticket:
    with db.session() as session:
        return session.get(Ticket, ticket_id)


def at(moment: datetime | None) -> datetime | None:
    return sla.as_utc(moment)


def breaches(db: Database) -> list[dict[str, Any]]:
    return [data for _, data in outbox_events(db, "ticket.sla_breached")]


def test_a_ticket_without_a_policy_has_no_sla(db):
    ticket = load(db, open_ticket(db))
    assert ticket.sla_policy_id is None and ticket.sla_running_since is None
    assert ticket.first_response_due_at is None and ticket.resolution_due_at is None
    assert ticket.sla_breached is False


def test_round_the_clock_targets_and_warnings_at_80_percent(db):
    policy_id = add_policy(db, first_response=60, resolution=480)
    ticket = load(db, open_ticket(db))
    assert ticket.sla_policy_id == policy_id
    assert at(ticket.first_response_due_at) == T0 + hours(1)
    assert at(ticket.first_response_warn_at) == T0 + timedelta(minutes=48)
    assert at(ticket.resolution_due_at) == T0 + hours(8)
    assert at(ticket.resolution_warn_at) == T0 + timedelta(minutes=384)
    assert at(ticket.sla_running_since) == T0 and ticket.sla_elapsed_seconds == 0


def test_a_weekend_in_the_middle_of_a_target_moves_the_deadline_past_it(db):
    add_policy(db, first_response=60, resolution=120, calendar=OFFICE)
    ticket = load(db, open_ticket(db, created_at=berlin(2026, 6, 5, 16, 30)))  # a Friday
    assert at(ticket.first_response_due_at) == berlin(2026, 6, 8, 9, 30)
    assert at(ticket.resolution_due_at) == berlin(2026, 6, 8, 10, 30)


def test_pending_pauses_resolution_and_resuming_moves_the_deadline_by_the_pause(db):
    add_policy(db, resolution=480)
    ticket_id = open_ticket(db)
    paused = change(db, ticket_id, T0 + hours(1), status="pending")
    assert paused.resolution_due_at is None and paused.resolution_warn_at is None
    assert paused.sla_running_since is None and paused.sla_elapsed_seconds == 3600
    # The first response clock does not pause.
    assert at(paused.first_response_due_at) == T0 + hours(1)
    resumed = change(db, ticket_id, T0 + hours(3), status="open")
    assert at(resumed.resolution_due_at) == T0 + hours(8) + hours(2)
    assert at(resumed.sla_running_since) == T0 + hours(3)


def test_a_pause_moves_the_deadline_by_the_paused_business_time_only(db):
    add_policy(db, resolution=480, calendar=OFFICE)
    ticket_id = open_ticket(db, created_at=berlin(2026, 6, 1, 9, 0))  # Monday opening
    assert at(load(db, ticket_id).resolution_due_at) == berlin(2026, 6, 1, 17, 0)
    change(db, ticket_id, berlin(2026, 6, 1, 10, 0), status="pending")
    # Paused from Monday 10:00 to Tuesday 10:00: 8 business hours, one working day.
    resumed = change(db, ticket_id, berlin(2026, 6, 2, 10, 0), status="open")
    assert resumed.sla_elapsed_seconds == 3600
    assert at(resumed.resolution_due_at) == berlin(2026, 6, 2, 17, 0)


def test_resolving_stops_the_clock_and_reopening_continues_it(db):
    add_policy(db, resolution=480)
    ticket_id = open_ticket(db)
    resolved = change(db, ticket_id, T0 + hours(2), status="resolved")
    assert at(resolved.resolution_due_at) == T0 + hours(8)  # kept for reporting
    assert resolved.resolution_warn_at is None and resolved.first_response_warn_at is None
    assert resolved.sla_running_since is None and resolved.sla_elapsed_seconds == 7200
    reopened = change(db, ticket_id, T0 + hours(5), status="open")
    assert at(reopened.resolution_due_at) == T0 + hours(5) + hours(6)
    assert at(reopened.resolution_warn_at) == T0 + hours(5) + timedelta(minutes=384 - 120)


def test_the_first_response_makes_its_deadline_final(db):
    add_policy(db, "normal", first_response=60)
    add_policy(db, "urgent", first_response=15, resolution=60)
    ticket_id = open_ticket(db)
    answered = change(db, ticket_id, T0 + hours(0.5), first_responded_at=T0 + hours(0.5))
    assert at(answered.first_response_due_at) == T0 + hours(1)
    assert answered.first_response_warn_at is None
    escalated = change(db, ticket_id, T0 + hours(0.6), priority="urgent")
    assert at(escalated.first_response_due_at) == T0 + hours(1)
    assert breaches(db) == []


def test_a_late_first_response_is_recorded_as_a_breach_once(db):
    add_policy(db, first_response=60)
    ticket_id = open_ticket(db)
    late = change(db, ticket_id, T0 + hours(2), first_responded_at=T0 + hours(2))
    assert late.sla_breached is True and at(late.first_response_breached_at) == T0 + hours(2)
    change(db, ticket_id, T0 + hours(3), status="open")
    [event] = breaches(db)
    assert event["target"] == "first_response" and event["ticket_id"] == ticket_id
    assert event["due_at"] == "2026-06-01T09:00:00Z"


def test_a_priority_change_applies_the_new_targets_to_the_time_run_so_far(db):
    add_policy(db, "normal", resolution=480)
    add_policy(db, "urgent", first_response=15, resolution=120)
    add_policy(db, "low", first_response=120, resolution=2400, calendar=OFFICE)
    ticket_id = open_ticket(db)
    change(db, ticket_id, T0 + hours(1), status="pending")
    change(db, ticket_id, T0 + hours(2), status="open")
    urgent = change(db, ticket_id, T0 + hours(2.5), priority="urgent")
    # 1.5 hours ran (the pause excluded): 30 minutes are left of the urgent 2 hours.
    assert at(urgent.resolution_due_at) == T0 + hours(3)
    assert at(urgent.first_response_due_at) == T0 + timedelta(minutes=15)
    # A change of calendar banks the time run so far in the old one.
    low = change(db, ticket_id, T0 + hours(3), priority="low")
    assert low.sla_elapsed_seconds == 2 * 3600 and at(low.sla_running_since) == T0 + hours(3)
    # Monday 13:00 in Berlin with 38 business hours left: 4 + 4 * 8 hours to Friday
    # closing, and the last 2 on Monday after the weekend.
    assert at(low.resolution_due_at) == berlin(2026, 6, 8, 11, 0)


def test_a_priority_without_a_policy_clears_the_deadlines_but_keeps_breaches(db):
    add_policy(db, "normal", first_response=60)
    ticket_id = open_ticket(db)
    change(db, ticket_id, T0 + hours(2), first_responded_at=T0 + hours(2))
    cleared = change(db, ticket_id, T0 + hours(3), priority="low")
    assert cleared.sla_policy_id is None and cleared.resolution_due_at is None
    assert cleared.first_response_due_at is None and cleared.sla_running_since is None
    assert cleared.sla_breached is True and cleared.first_response_breached_at is not None


@pytest.mark.parametrize("status", ["pending", "resolved", "closed"])
def test_a_passed_deadline_the_sweep_did_not_flag_yet_is_recorded_when_the_clock_stops(db, status):
    add_policy(db, first_response=60, resolution=120)
    ticket_id = open_ticket(db)
    change(db, ticket_id, T0 + hours(0.5), first_responded_at=T0 + hours(0.5))
    stopped = change(db, ticket_id, T0 + hours(2.5), status=status)
    assert stopped.sla_breached is True and at(stopped.resolution_breached_at) == T0 + hours(2.5)
    [event] = breaches(db)
    assert event["target"] == "resolution" and event["due_at"] == "2026-06-01T10:00:00Z"
    change(db, ticket_id, T0 + hours(3), status="open")
    again = change(db, ticket_id, T0 + hours(4), status=status)
    assert len(breaches(db)) == 1 and again.sla_breached is True


def test_a_breach_the_sweep_recorded_is_kept_and_not_recorded_again(db):
    add_policy(db, resolution=120)
    ticket_id = open_ticket(db)
    with db.session() as session:  # as the sweep leaves it
        ticket = session.get(Ticket, ticket_id)
        ticket.resolution_breached_at = T0 + hours(2)
        ticket.sla_breached = True
        ticket.first_responded_at = T0 + hours(0.5)
    resolved = change(db, ticket_id, T0 + hours(3), status="resolved")
    assert at(resolved.resolution_breached_at) == T0 + hours(2) and resolved.sla_breached
    assert breaches(db) == []


def test_refreshing_twice_changes_nothing(db):
    add_policy(db, resolution=480, calendar=OFFICE)
    ticket_id = open_ticket(db)
    first = change(db, ticket_id, T0 + hours(5))
    second = change(db, ticket_id, T0 + hours(7))
    assert sla.sla_state(first) == sla.sla_state(second)


def test_a_ticket_refreshed_before_its_first_flush_uses_the_column_defaults(db):
    add_policy(db, "normal", first_response=30, resolution=60)
    now = datetime.now(UTC)
    with db.session() as session:
        ticket = Ticket(subject="Defaults")  # priority normal, status new by default
        session.add(ticket)
        sla.refresh(session, ticket, now)
    stored = load(db, ticket.id)
    assert at(stored.first_response_due_at) == at(stored.created_at) + hours(0.5)
    assert at(stored.resolution_due_at) == now + hours(1)
