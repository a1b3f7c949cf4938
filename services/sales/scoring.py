"""Lead scoring you can explain: rules on a lead's fields plus points for what they did.

score = rule_points (the active rules that match) + behaviour_points (opens, clicks, forms).
The matching rules are kept on the lead (`score_rules`), so the breakdown always adds up
to the score, also for converted leads whose score no longer changes.

A score crossing the qualification threshold upward (below before, at or above after)
qualifies a new or working lead. It fires on the crossing only: a lead that stays above
is not qualified again; one that falls below and crosses again while new or working is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.sales import leads
from services.sales.lead_schemas import CUSTOM_PREFIX, is_number, rule_errors
from services.sales.models import (
    BEHAVIOUR_KINDS,
    OPEN_LEAD_STATUSES,
    Lead,
    LeadBehaviour,
    SalesSetting,
    ScoringRule,
)
from shared.db import take_write_lock
from shared.events import utcnow
from shared.web import check_version, invalid, not_found

SETTINGS_KEY = "lead_scoring"
DEFAULT_SETTINGS: dict[str, Any] = {
    "qualify_threshold": 50,
    "behaviour_points": {"email_opened": 2, "email_clicked": 5, "form_submitted": 10},
}
RESCORE_BATCH = 500
# Leads in these statuses are qualified when their score crosses the threshold.
QUALIFIABLE = ("new", "working")

FREE_MAIL_DOMAINS = frozenset(
    """
    gmail.com googlemail.com yahoo.com yahoo.co.uk yahoo.de yahoo.fr yahoo.es yahoo.it
    ymail.com rocketmail.com hotmail.com hotmail.co.uk hotmail.de hotmail.fr hotmail.it
    outlook.com outlook.de live.com live.de msn.com aol.com aol.de icloud.com me.com mac.com
    gmx.de gmx.net gmx.at gmx.ch gmx.com web.de t-online.de freenet.de mail.de posteo.de
    mail.ru inbox.ru list.ru bk.ru rambler.ru yandex.ru yandex.com proton.me protonmail.com
    pm.me tutanota.com tuta.io zoho.com mail.com fastmail.com hey.com qq.com 163.com 126.com
    libero.it orange.fr wanadoo.fr laposte.net free.fr seznam.cz wp.pl o2.pl onet.pl
    rediffmail.com
    """.split()
)
# --- evaluating a rule ----------------------------------------------------------------------


def email_domain(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    return email.rsplit("@", 1)[1].strip().lower() or None


def lead_value(lead: Lead, field: str) -> Any:
    """The value a rule on `field` tests."""
    if field == "email_domain":
        return email_domain(lead.email)
    if field.startswith(CUSTOM_PREFIX):
        return (lead.custom_fields or {}).get(field[len(CUSTOM_PREFIX) :])
    return getattr(lead, field, None)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip().lower()


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _same(actual: Any, expected: Any) -> bool:
    """Equality as a rule means it: numbers numerically, text case-insensitively."""
    if is_number(expected):
        number = _number(actual)
        return number is not None and number == Decimal(str(expected))
    return _text(actual) == _text(expected)


TEXT_TESTS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda text, part: part in text,
    "starts_with": lambda text, part: text.startswith(part),
    "ends_with": lambda text, part: text.endswith(part),
}
NUMBER_TESTS: dict[str, Callable[[Decimal, Decimal], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _matches_present(items: list[Any], operator: str, expected: Any) -> bool:
    """A rule tested against a present value (a list value matches if any item does)."""
    if operator in ("eq", "neq"):
        hit = any(_same(item, expected) for item in items)
        return hit if operator == "eq" else not hit
    if operator == "in":
        return any(_same(item, wanted) for item in items for wanted in expected)
    if operator in NUMBER_TESTS:
        numbers = [n for n in map(_number, items) if n is not None]
        limit = Decimal(str(expected))
        return any(NUMBER_TESTS[operator](n, limit) for n in numbers)
    negated = operator == "not_contains"
    test = TEXT_TESTS["contains" if negated else operator]
    hit = any(test(_text(item), _text(expected)) for item in items)
    return not hit if negated else hit


def rule_matches(rule: ScoringRule, lead: Lead) -> bool:
    """Whether the lead satisfies `rule.field rule.operator rule.value`."""
    actual = lead_value(lead, rule.field)
    present = actual not in (None, "", [])
    if rule.operator == "exists":
        return present == rule.value
    if rule.operator == "is_free_mail":
        domain = email_domain(lead.email) if rule.field == "email" else actual
        return bool(domain) and (domain in FREE_MAIL_DOMAINS) == (rule.value is not False)
    if not present:
        return rule.operator in ("neq", "not_contains")
    items = actual if isinstance(actual, list) else [actual]
    return _matches_present(items, rule.operator, rule.value)


def explain(rule: ScoringRule) -> dict[str, Any]:
    """A matching rule as the score breakdown shows it."""
    return {
        "rule_id": rule.id,
        "name": rule.name,
        "field": rule.field,
        "operator": rule.operator,
        "value": rule.value,
        "points": rule.points,
    }


# --- settings -------------------------------------------------------------------------------


def scoring_settings(session: Session) -> dict[str, Any]:
    """The qualification threshold and behaviour points (defaults for what is not set)."""
    row = session.get(SalesSetting, SETTINGS_KEY)
    stored = row.value if row is not None and isinstance(row.value, dict) else {}
    points = {**DEFAULT_SETTINGS["behaviour_points"], **stored.get("behaviour_points", {})}
    threshold = stored.get("qualify_threshold", DEFAULT_SETTINGS["qualify_threshold"])
    return {"qualify_threshold": threshold, "behaviour_points": points}


def lock_settings(session: Session) -> SalesSetting:
    """The scoring settings row, made if missing, locked: rule changes take turns on it."""
    take_write_lock(session)
    row = session.get(SalesSetting, SETTINGS_KEY, with_for_update=True, populate_existing=True)
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = SalesSetting(key=SETTINGS_KEY, value={}, updated_at=utcnow())
            session.add(row)
        return row
    except IntegrityError:  # another process made it first
        row = session.get(SalesSetting, SETTINGS_KEY, with_for_update=True, populate_existing=True)
        assert row is not None
        return row


def change_settings(session: Session, changes: dict[str, Any]) -> dict[str, Any]:
    """Store the given settings (fields left out keep their value); the settings now.

    Existing scores do not change: new behaviour points apply to behaviour from now on,
    a new threshold to scores that cross it from now on.
    """
    row = lock_settings(session)
    current = scoring_settings(session)
    merged = {
        "qualify_threshold": changes.get("qualify_threshold", current["qualify_threshold"]),
        "behaviour_points": {**current["behaviour_points"], **changes.get("behaviour_points", {})},
    }
    row.value = merged
    row.updated_at = utcnow()
    return merged


# --- scoring a lead -------------------------------------------------------------------------


def active_rules(session: Session) -> list[ScoringRule]:
    statement = select(ScoringRule).where(ScoringRule.active.is_(True))
    return list(session.scalars(statement.order_by(ScoringRule.created_at, ScoringRule.id)))


def refresh_score(
    session: Session,
    lead: Lead,
    old_score: int | None,
    rules: Sequence[ScoringRule] | None = None,
    threshold: int | None = None,
) -> list[str]:
    """Recompute rule points and score, qualifying on an upward crossing; fields changed.

    `old_score` None (a new lead) counts as below the threshold.
    """
    if rules is None:
        rules = active_rules(session)
    matched = [explain(rule) for rule in rules if rule_matches(rule, lead)]
    changed = []
    if matched != (lead.score_rules or []):
        lead.score_rules = matched
    rule_points = sum(entry["points"] for entry in matched)
    if rule_points != lead.rule_points:
        lead.rule_points = rule_points
        changed.append("rule_points")
    if threshold is None:
        threshold = scoring_settings(session)["qualify_threshold"]
    return changed + settle_score(lead, old_score, threshold)


def settle_score(lead: Lead, old_score: int | None, threshold: int) -> list[str]:
    """score = rule + behaviour points; an upward crossing qualifies; the fields changed."""
    changed = []
    score = lead.rule_points + lead.behaviour_points
    if score != lead.score:
        lead.score = score
        changed.append("score")
    below_before = old_score is None or old_score < threshold
    if below_before and score >= threshold and lead.status in QUALIFIABLE:
        lead.status = "qualified"
        lead.qualified_at = utcnow()
        changed += ["status", "qualified_at"]
    return changed


def rescore_open_leads(session: Session) -> int:
    """Score every open lead against the active rules again (after a rule change).

    Runs in batches of locked rows; records the events of each lead that changed. The
    caller holds the settings lock (lock_settings), so rule changes rescore in turn.
    How many leads changed.
    """
    rules = active_rules(session)
    threshold = scoring_settings(session)["qualify_threshold"]
    changed_count, last_id = 0, ""
    while True:
        statement = (
            select(Lead)
            .where(Lead.status.in_(OPEN_LEAD_STATUSES), Lead.id > last_id)
            .order_by(Lead.id)
            .limit(RESCORE_BATCH)
            .with_for_update()
        )
        batch = list(session.scalars(statement))
        if not batch:
            return changed_count
        for lead in batch:
            previous_status = lead.status
            changed = refresh_score(session, lead, lead.score, rules, threshold)
            leads.finish_change(session, lead, changed, previous_status, "score")
            changed_count += bool(changed)
        session.flush()
        last_id = batch[-1].id
        for lead in batch:
            session.expunge(lead)


# --- behaviour ------------------------------------------------------------------------------


def record_behaviour(
    session: Session, lead: Lead, kind: str, event_id: str | None, occurred_at: datetime
) -> bool:
    """Count what a lead did (email_opened, email_clicked, form_submitted) in its score.

    Adds a LeadBehaviour row worth the configured points, updates behaviour_points and
    score, records `lead.updated` and qualifies on an upward threshold crossing. False when
    it did not count: the same event_id counted already, or the lead is converted (its
    score is final). An unknown kind is a ValueError.
    """
    if kind not in BEHAVIOUR_KINDS:
        raise ValueError(f"Unknown behaviour kind {kind!r}")
    lead = leads.lock_lead(session, lead.id)
    if lead.status == "converted" or _counted(session, event_id):
        return False
    settings = scoring_settings(session)
    points = int(settings["behaviour_points"].get(kind, 0))
    try:
        with session.begin_nested():
            session.add(
                LeadBehaviour(
                    lead_id=lead.id,
                    kind=kind,
                    points=points,
                    event_id=event_id,
                    occurred_at=occurred_at,
                )
            )
    except IntegrityError:  # the same event, counted by another consumer meanwhile
        return False
    previous_status, old_score = lead.status, lead.score
    lead.behaviour_points += points
    changed = ["behaviour_points"] if points else []
    changed += settle_score(lead, old_score, settings["qualify_threshold"])
    leads.finish_change(session, lead, changed, previous_status, "score")
    return True


def _counted(session: Session, event_id: str | None) -> bool:
    if event_id is None:
        return False
    found = session.scalar(select(LeadBehaviour.id).where(LeadBehaviour.event_id == event_id))
    return found is not None


def score_breakdown(session: Session, lead: Lead) -> dict[str, Any]:
    """Why the lead has its score: the matching rules and the behaviour, adding up to it."""
    statement = (
        select(LeadBehaviour.kind, func.count(), func.coalesce(func.sum(LeadBehaviour.points), 0))
        .where(LeadBehaviour.lead_id == lead.id)
        .group_by(LeadBehaviour.kind)
    )
    by_kind = {kind: (count, int(points)) for kind, count, points in session.execute(statement)}
    behaviour = [
        {"kind": kind, "count": by_kind[kind][0], "points": by_kind[kind][1]}
        for kind in _ordered(by_kind)
    ]
    return {"rules": list(lead.score_rules or []), "behaviour": behaviour, "total": lead.score}


def _ordered(kinds: Iterable[str]) -> list[str]:
    order = {kind: index for index, kind in enumerate(BEHAVIOUR_KINDS)}
    return sorted(kinds, key=lambda kind: (order.get(kind, len(order)), kind))


# --- rules ----------------------------------------------------------------------------------


def get_rule(session: Session, rule_id: str) -> ScoringRule:
    rule = session.get(ScoringRule, str(rule_id))
    if rule is None:
        raise not_found("Scoring rule", rule_id)
    return rule


def create_rule(session: Session, data: Mapping[str, Any]) -> tuple[ScoringRule, int]:
    """Add a rule (validated by the schema) and rescore open leads; the rule, leads changed."""
    lock_settings(session)
    now = utcnow()
    rule = ScoringRule(
        name=data["name"],
        field=data["field"],
        operator=data["operator"],
        value=data.get("value"),
        points=data["points"],
        active=data.get("active", True),
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(rule)
    session.flush()
    return rule, rescore_open_leads(session)


def update_rule(
    session: Session, rule_id: str, changes: Mapping[str, Any], expected_version: int | None
) -> tuple[ScoringRule, int]:
    """Change a rule (422 if the result cannot be evaluated) and rescore open leads."""
    lock_settings(session)
    rule = session.get(ScoringRule, str(rule_id), populate_existing=True)
    if rule is None:
        raise not_found("Scoring rule", rule_id)
    check_version(rule.version, expected_version)
    merged = {name: changes.get(name, getattr(rule, name)) for name in ("field", "operator")}
    errors = rule_errors(merged["field"], merged["operator"], changes.get("value", rule.value))
    if errors:
        raise invalid(errors)
    changed = [name for name, value in changes.items() if getattr(rule, name) != value]
    if not changed:
        return rule, 0
    for name in changed:
        setattr(rule, name, changes[name])
    rule.version += 1
    rule.updated_at = utcnow()
    session.flush()
    return rule, rescore_open_leads(session)


def delete_rule(session: Session, rule_id: str, expected_version: int | None) -> int:
    """Delete a rule and rescore open leads; how many leads changed."""
    lock_settings(session)
    rule = get_rule(session, rule_id)
    check_version(rule.version, expected_version)
    session.delete(rule)
    session.flush()
    return rescore_open_leads(session)
