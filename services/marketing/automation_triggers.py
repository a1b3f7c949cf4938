"""What fires automations: the events the marketing queue consumes, and inactivity.

Events (automations.TRIGGER_TYPES): this part is the last of handlers.PARTS, so it runs
after the replica in the consumer's transaction and contact conditions see the contact as
the event left it. The contact is the event's `data.id` for `contact.*` events, else its
`data.contact_id`; an event naming none fires nothing (every action is about a contact),
one naming something that is no id is a PermanentError (dead-lettered), but only when an
enabled rule wants the type. Each enabled rule of the type whose conditions match gets one
run, keyed by the event id (automation_runs.py).

An event whose conditions do not match records nothing. A CRM user reads a rule's run log
as "what this automation did, and why it did not do it for someone it meant": a row per
non-matching `email.opened` or `contact.updated` would bury that under thousands of
events the rule never meant (and grow the table with every event of a busy type). A
`skipped` run is written only for a trigger that matched but could not be acted on when
the run came: the rule was switched off, the contact erased, unsubscribed or ownerless.

`contact.inactive` (a timer, `inactive_days` per rule, default 90): live contacts whose
last activity (`last_activity_at`, or creation when never active) is older than that and
who meet the rule's contact conditions. The trigger key is the contact and that moment,
so a contact fires once per stretch of inactivity: again only after new activity and
another `inactive_days`. Each scan locks its rule (`FOR UPDATE SKIP LOCKED`; SQLite's
write lock), so overlapping ticks or workers never scan one rule at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from services.marketing.automation_conditions import contact_only_condition, matches
from services.marketing.automation_runs import Trigger, start_run
from services.marketing.automations import DEFAULT_INACTIVE_DAYS, INACTIVE, TRIGGER_TYPES
from services.marketing.models import AutomationRule, AutomationRun, Contact
from shared.bus import Handler, PermanentError
from shared.config import Settings
from shared.db import Database, take_write_lock
from shared.events import Envelope, canonical_uuid, isoformat, utcnow
from shared.worker import Timer

INACTIVE_BATCH = 500
INACTIVE_TICK_SECONDS = 60.0


def contact_of(event: Envelope) -> str | None:
    """The id of the contact an event is about, or None when it names none."""
    if event.type.startswith("contact."):
        value = event.data.get("id", event.aggregate_id)
    else:
        value = event.data.get("contact_id")
    if value is None:
        return None
    contact_id = canonical_uuid(value)
    if contact_id is None:
        raise PermanentError(f"{event.type}: the contact id must be a UUID string")
    return contact_id


def enabled_rules(session: Session, event_type: str) -> list[AutomationRule]:
    statement = select(AutomationRule).where(
        AutomationRule.event_type == event_type, AutomationRule.enabled.is_(True)
    )
    return list(session.scalars(statement.order_by(AutomationRule.created_at, AutomationRule.id)))


def trigger_handler(settings: Settings) -> Handler:
    """The handler firing the enabled rules of an event's type."""

    def on_automation_trigger(session: Session, event: Envelope) -> None:
        """Start a run of each enabled rule of this type whose conditions the event meets."""
        if event.data.get("redacted"):
            return  # about someone erased: no one to act for
        rules = enabled_rules(session, event.type)
        contact_id = contact_of(event) if rules else None
        if contact_id is None:
            return
        trigger = Trigger(event.id, event.type, contact_id, event.occurred_at)
        for rule in rules:
            if matches(session, rule.conditions, event.data, contact_id):
                start_run(session, settings, rule, trigger)

    return on_automation_trigger


# --- contact.inactive ------------------------------------------------------------------------


def _scan(session: Session, settings: Settings, rule_id: str, now: datetime, limit: int) -> int:
    """Start the runs of one inactivity rule (locked, else skipped); how many."""
    take_write_lock(session)
    rule = session.scalar(
        select(AutomationRule)
        .where(AutomationRule.id == rule_id, AutomationRule.enabled.is_(True))
        .with_for_update(skip_locked=True)
    )
    if rule is None:
        return 0  # switched off meanwhile, or another worker is scanning it
    since = func.coalesce(Contact.last_activity_at, Contact.contact_created_at)
    cutoff = now - timedelta(days=rule.inactive_days or DEFAULT_INACTIVE_DAYS)
    fired = exists().where(
        AutomationRun.rule_id == rule.id,
        AutomationRun.contact_id == Contact.id,
        AutomationRun.inactive_since == since,
    )
    candidates = session.execute(
        select(Contact.id, since.label("since"))
        .where(Contact.erased.is_(False), Contact.merged_into.is_(None))
        .where(since < cutoff, ~fired, contact_only_condition(rule.conditions))
        .order_by(Contact.id)
        .limit(limit)
    ).all()
    started = 0
    for contact_id, inactive_since in candidates:
        key = f"inactive:{contact_id}:{isoformat(inactive_since)}"
        trigger = Trigger(key, INACTIVE, contact_id, now, inactive_since)
        started += start_run(session, settings, rule, trigger) is not None
    return started


def run_inactive(
    db: Database, settings: Settings, now: datetime | None = None, limit: int = INACTIVE_BATCH
) -> int:
    """One tick: fire the enabled inactivity rules (up to `limit` contacts each); runs."""
    now = now or utcnow()
    with db.session() as session:
        rule_ids = list(
            session.scalars(
                select(AutomationRule.id).where(
                    AutomationRule.event_type == INACTIVE, AutomationRule.enabled.is_(True)
                )
            )
        )
    started = 0
    for rule_id in rule_ids:  # a transaction per rule: one rule's lock at a time
        with db.session() as session:
            started += _scan(session, settings, rule_id, now, limit)
    return started


def inactive_timer(settings: Settings, db: Database) -> Timer:
    """The worker's timer firing `contact.inactive` rules."""
    every = float(settings.extra.get("automation_inactive_tick_seconds", INACTIVE_TICK_SECONDS))
    return Timer(every, lambda: run_inactive(db, settings), name="automation-inactivity")


def handlers(settings: Settings) -> dict[str, Handler]:
    """The event types automations may be triggered by (contact.inactive is the timer's)."""
    handler = trigger_handler(settings)
    return {event_type: handler for event_type in TRIGGER_TYPES if event_type != INACTIVE}
