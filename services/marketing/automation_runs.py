"""Runs of automations: each firing of a rule, once per trigger, and the delay timer.

`start_run` makes the run of a rule for one trigger key (the event id; for
`contact.inactive` the contact and the moment it has been inactive since). The key is
unique per rule: a redelivered event, two workers or overlapping timer ticks find the run
there and do nothing (the insert is in a savepoint, so a race lost is no error either).
Without a delay the actions are done at once, in the same transaction (the consumer's or
the timer's); with one the run is `scheduled` until `due_at`, `delay_seconds` after the
trigger happened.

`run_due` (the worker's timer) takes due scheduled runs: their ids are read with
`FOR UPDATE SKIP LOCKED` on PostgreSQL (the write lock serialises on SQLite) and each
is finished by an UPDATE by id that still requires `scheduled`, in the same transaction
as its actions: a run's actions are done once. At run time the rule must still be
enabled and the contact live (not erased; a merged contact's survivor stands in), and a
`send_template` checks consent then (automation_actions.py): a skipped run says why.

Status: `done` (some action done, none failed), `skipped` (nothing done: the reasons),
`failed` (an action could not be done, e.g. its static segment was deleted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.marketing import automation_actions
from services.marketing.models import AutomationRule, AutomationRun, Contact, new_id
from shared.config import Settings
from shared.db import Database, take_write_lock
from shared.events import utcnow
from shared.worker import Timer

log = logging.getLogger(__name__)

SCHEDULED, DONE, SKIPPED, FAILED = "scheduled", "done", "skipped", "failed"
DUE_BATCH = 100
TICK_SECONDS = 5.0
MAX_MERGE_HOPS = 20
MAX_REASON = 1000


@dataclass(frozen=True)
class Trigger:
    """What fired a rule: its unique key, the event type, the contact, and when."""

    key: str
    event_type: str
    contact_id: str | None
    occurred_at: datetime
    inactive_since: datetime | None = None


def start_run(
    session: Session, settings: Settings, rule: AutomationRule, trigger: Trigger
) -> AutomationRun | None:
    """The rule's run for this trigger, done now or scheduled; None if it exists already."""
    known = select(AutomationRun.id).where(
        AutomationRun.rule_id == rule.id, AutomationRun.trigger_key == trigger.key
    )
    if session.scalar(known) is not None:
        return None  # fired for this trigger already
    run = AutomationRun(
        id=new_id(),
        rule_id=rule.id,
        trigger_key=trigger.key,
        event_type=trigger.event_type,
        contact_id=trigger.contact_id,
        status=SCHEDULED,
        actions_done=[],
        inactive_since=trigger.inactive_since,
        created_at=utcnow(),
    )
    if rule.delay_seconds:
        run.due_at = trigger.occurred_at + timedelta(seconds=rule.delay_seconds)
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:
        return None  # another worker made it meanwhile
    if not rule.delay_seconds:
        perform_run(session, settings, run, rule)
    return run


def live_contact(session: Session, contact_id: str | None) -> Contact | None:
    """The replica's contact, a merged one's survivor; None when unknown or erased."""
    for _ in range(MAX_MERGE_HOPS):
        row = session.get(Contact, contact_id) if contact_id else None
        if row is None or row.erased:
            return None
        if row.merged_into is None:
            return row
        contact_id = row.merged_into
    return None


def _finish(run: AutomationRun, status: str, reason: str | None, outcomes: Any) -> None:
    run.status, run.ran_at, run.actions_done = status, utcnow(), outcomes
    run.reason = reason[:MAX_REASON] if reason else None


def perform_run(
    session: Session, settings: Settings, run: AutomationRun, rule: AutomationRule | None
) -> None:
    """Do the run's actions now, if its rule is enabled and its contact live."""
    if rule is None or not rule.enabled:
        _finish(run, SKIPPED, "The automation is disabled or deleted.", [])
        return
    contact = live_contact(session, run.contact_id)
    if contact is None:
        _finish(run, SKIPPED, "The contact is unknown or erased.", [])
        return
    outcomes = automation_actions.perform(session, settings, run, contact, rule.actions)
    statuses = {outcome["status"] for outcome in outcomes}
    status = FAILED if FAILED in statuses else DONE if DONE in statuses else SKIPPED
    reasons = [outcome["detail"] for outcome in outcomes if outcome["status"] != DONE]
    _finish(run, status, " ".join(reasons) or None, outcomes)
    log.info("automation %s ran for contact %s: %s", rule.id, contact.id, status)


# --- the delay timer -------------------------------------------------------------------------


def _due(now: datetime) -> tuple[Any, ...]:
    return (AutomationRun.status == SCHEDULED, AutomationRun.due_at <= now)


def claim_due(session: Session, now: datetime, limit: int) -> list[str]:
    """Lock up to `limit` due scheduled runs until the transaction ends; their ids."""
    if session.scalar(select(AutomationRun.id).where(*_due(now)).limit(1)) is None:
        return []  # idle: no lock taken (SQLite has only one)
    take_write_lock(session)
    return list(
        session.scalars(
            select(AutomationRun.id)
            .where(*_due(now))
            .order_by(AutomationRun.due_at, AutomationRun.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def _take(session: Session, run_id: str) -> AutomationRun | None:
    """The run, if it is still scheduled (an UPDATE by id that requires it)."""
    taken = session.execute(
        update(AutomationRun)
        .where(AutomationRun.id == run_id, AutomationRun.status == SCHEDULED)
        .values(ran_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    return session.get(AutomationRun, run_id, populate_existing=True) if taken else None


def run_due(
    db: Database, settings: Settings, now: datetime | None = None, limit: int = DUE_BATCH
) -> int:
    """One tick: do the due scheduled runs (up to `limit`); how many ran."""
    now = now or utcnow()
    done = 0
    with db.session() as session:
        for run_id in claim_due(session, now, limit):
            run = _take(session, run_id)
            if run is None:
                continue
            rule = session.get(AutomationRule, run.rule_id)
            try:
                with session.begin_nested():
                    perform_run(session, settings, run, rule)
            except Exception as error:  # a bug in one run must not hold up every later one
                log.exception("automation run %s failed", run_id)
                _finish(run, FAILED, f"Unexpected error: {error!r}", [])
            done += 1
    return done


def due_runs_timer(settings: Settings, db: Database) -> Timer:
    """The worker's timer doing delayed automation runs."""
    every = float(settings.extra.get("automation_tick_seconds", TICK_SECONDS))
    return Timer(every, lambda: run_due(db, settings), name="automation-runs")
