"""The support report: backlog now, SLA compliance, handling times and CSAT over a range.

Every figure is counted or summed in SQL, grouped three ways: overall, per assignee and
per period (UTC month, or ISO week starting Monday). The range is UTC days, both ends
included; what falls in it depends on the figure:

- first response: tickets *created* in the range. Met: answered by the due time (or
  answered, with no due time: no target to miss). Missed: answered late, or not answered
  and already past due at `now`. Tickets not answered and not yet due are not measured.
- resolution: tickets *resolved* in the range that are still resolved or closed. Met:
  resolved by the due time, or never stamped as breached; missed otherwise.
- times: wall-clock minutes from creation to first response and to resolution, over the
  same tickets, rounded per ticket to whole seconds by the database (julianday() on
  SQLite, extract(epoch) on PostgreSQL), averaged exactly, shown to one decimal, half-up.
- csat: ratings *given* in the range, per the assignee stored with each rating.
- backlog: open tickets (new, open, pending) now, whatever the range.

Rates are exact ratios shown as 4-place decimal strings (null when nothing to measure).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import and_, case, func, literal_column, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from services.support.models import OPEN_STATUSES, PRIORITIES, CsatRating, Ticket
from shared.reporting import elapsed_seconds, is_postgres, ratio, within_days
from shared.reporting import grouped as _grouped

RATINGS = (1, 2, 3, 4, 5)
RESOLVED_STATUSES = ("resolved", "closed")
# What a figure is grouped by: a column expression, or None for everything (key None).
Key = ColumnElement[Any] | None
DIMENSIONS = ("overall", "agent", "period")


# --- exact figures ------------------------------------------------------------------------


def minutes(seconds: int, count: int) -> str | None:
    """The average of `count` durations totalling `seconds`, in minutes to one decimal."""
    if not count:
        return None
    average = Decimal(seconds) / Decimal(count) / 60
    return str(average.quantize(Decimal("0.1"), ROUND_HALF_UP))


@dataclass
class Figures:
    """The SLA, time and CSAT counts of one group, exact integers until shown."""

    responded: int = 0
    response_met: int = 0
    response_missed: int = 0
    response_seconds: int = 0
    resolved: int = 0
    resolution_met: int = 0
    resolution_seconds: int = 0
    ratings: Counter[int] = field(default_factory=Counter)

    def view(self) -> dict[str, Any]:
        """`{sla, times, csat}` as the report answers them."""
        measured = self.response_met + self.response_missed
        missed = self.resolved - self.resolution_met
        count = sum(self.ratings.values())
        total = sum(rating * times for rating, times in self.ratings.items())
        average = ratio(total, count, places=2)
        return {
            "sla": {
                "first_response": _compliance(measured, self.response_met, self.response_missed),
                "resolution": _compliance(self.resolved, self.resolution_met, missed),
            },
            "times": {
                "first_response": {
                    "count": self.responded,
                    "average_minutes": minutes(self.response_seconds, self.responded),
                },
                "resolution": {
                    "count": self.resolved,
                    "average_minutes": minutes(self.resolution_seconds, self.resolved),
                },
            },
            "csat": {
                "count": count,
                "average": average,
                "distribution": {str(rating): self.ratings[rating] for rating in RATINGS},
            },
        }


def _compliance(measured: int, met: int, missed: int) -> dict[str, Any]:
    return {"measured": measured, "met": met, "missed": missed, "compliance": ratio(met, measured)}


@dataclass
class Backlog:
    """Open tickets counted by status and by priority."""

    by_status: Counter[str] = field(default_factory=Counter)
    by_priority: Counter[str] = field(default_factory=Counter)

    def add(self, status: str, priority: str, count: int) -> None:
        self.by_status[status] += count
        self.by_priority[priority] += count

    def view(self) -> dict[str, Any]:
        return {
            "total": sum(self.by_status.values()),
            "by_status": {status: self.by_status[status] for status in OPEN_STATUSES},
            "by_priority": {priority: self.by_priority[priority] for priority in PRIORITIES},
        }


# --- SQL pieces -----------------------------------------------------------------------------


# --- periods --------------------------------------------------------------------------------


def period_start(session: Session, moment: Any, period: str) -> ColumnElement[str]:
    """The first day ("YYYY-MM-DD") of the UTC month or ISO week (from Monday) of `moment`."""
    if is_postgres(session):
        # Inline constants, so the SELECT and GROUP BY expressions are the same to PostgreSQL
        utc = func.timezone(literal_column("'UTC'"), moment)
        start = func.date_trunc(literal_column(f"'{period}'"), utc)
        return func.to_char(start, literal_column("'YYYY-MM-DD'"))
    # SQLite stores UTC timestamps as "YYYY-MM-DD HH:MM:SS.ffffff" text
    if period == "week":  # back six days, then on to the next Monday: this week's Monday
        return func.date(moment, literal_column("'-6 days'"), literal_column("'weekday 1'"))
    return func.strftime(literal_column("'%Y-%m-01'"), moment)


def first_day(day: date, period: str) -> date:
    """The first day of the month or ISO week holding `day`."""
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_starts(first: date, last: date, period: str) -> list[date]:
    """The first day of every period from the one holding `first` to the one holding `last`."""
    starts, day = [], first_day(first, period)
    while day <= last:
        starts.append(day)
        if period == "week":
            day += timedelta(days=7)
        else:
            day = (day + timedelta(days=31)).replace(day=1)
    return starts


def period_view(start: date, period: str) -> dict[str, str]:
    """A period's name ("2026-07", or the ISO week "2026-W27") and its first day."""
    if period == "week":
        year, week, _ = start.isocalendar()
        return {"period": f"{year:04d}-W{week:02d}", "start": start.isoformat()}
    return {"period": f"{start.year:04d}-{start.month:02d}", "start": start.isoformat()}


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


@dataclass(frozen=True)
class Scope:
    """What one report covers: the days, the period length, one assignee or all, and now."""

    first: date
    last: date
    period: str
    assignee_id: str | None
    now: datetime

    def key(self, session: Session, dimension: str, agent: Any, moment: Any) -> Key:
        """The grouping of a figure: none, by its assignee column, or by its moment's period."""
        if dimension == "agent":
            return agent
        if dimension == "period":
            return period_start(session, moment, self.period)
        return None


# --- the figures ----------------------------------------------------------------------------


def _first_responses(
    session: Session, scope: Scope, dimension: str, groups: defaultdict[Any, Figures]
) -> None:
    """First-response compliance and times of tickets created in the range, per group."""
    answered_at, due = Ticket.first_responded_at, Ticket.first_response_due_at
    answered = answered_at.is_not(None)
    met = and_(answered, or_(due.is_(None), answered_at <= due))
    missed = or_(
        and_(answered, due.is_not(None), answered_at > due),
        and_(answered_at.is_(None), due < scope.now),
    )
    seconds = case((answered, elapsed_seconds(session, answered_at, Ticket.created_at)), else_=0)
    key = scope.key(session, dimension, Ticket.assignee_id, Ticket.created_at)
    selected, grouped = _grouped(key)
    query = select(
        *selected, _count(answered), _count(met), _count(missed), func.sum(seconds)
    ).where(within_days(Ticket.created_at, scope.first, scope.last))
    if scope.assignee_id is not None:
        query = query.where(Ticket.assignee_id == scope.assignee_id)
    for group, count, met_count, missed_count, total in session.execute(query.group_by(*grouped)):
        figures = groups[group]
        figures.responded, figures.response_seconds = int(count), int(total or 0)
        figures.response_met, figures.response_missed = int(met_count), int(missed_count)


def _resolutions(
    session: Session, scope: Scope, dimension: str, groups: defaultdict[Any, Figures]
) -> None:
    """Resolution compliance and times of tickets resolved in the range, per group."""
    resolved_at, due = Ticket.resolved_at, Ticket.resolution_due_at
    met = or_(and_(due.is_not(None), resolved_at <= due), Ticket.resolution_breached_at.is_(None))
    key = scope.key(session, dimension, Ticket.assignee_id, resolved_at)
    selected, grouped = _grouped(key)
    query = (
        select(
            *selected,
            func.count(),
            _count(met),
            func.sum(elapsed_seconds(session, resolved_at, Ticket.created_at)),
        )
        .where(Ticket.status.in_(RESOLVED_STATUSES))
        .where(within_days(resolved_at, scope.first, scope.last))
    )
    if scope.assignee_id is not None:
        query = query.where(Ticket.assignee_id == scope.assignee_id)
    for group, count, met_count, total in session.execute(query.group_by(*grouped)):
        figures = groups[group]
        figures.resolved, figures.resolution_met = int(count), int(met_count)
        figures.resolution_seconds = int(total or 0)


def _ratings(
    session: Session, scope: Scope, dimension: str, groups: defaultdict[Any, Figures]
) -> None:
    """How many ratings of each value were given in the range, per group."""
    key = scope.key(session, dimension, CsatRating.assignee_id, CsatRating.created_at)
    selected, grouped = _grouped(key, CsatRating.rating)
    query = select(*selected, func.count()).where(
        within_days(CsatRating.created_at, scope.first, scope.last)
    )
    if scope.assignee_id is not None:
        query = query.where(CsatRating.assignee_id == scope.assignee_id)
    for group, rating, count in session.execute(query.group_by(*grouped)):
        groups[group].ratings[int(rating)] += int(count)


def figures_by(session: Session, scope: Scope, dimension: str) -> defaultdict[Any, Figures]:
    """Every SLA, time and CSAT figure grouped one way (see DIMENSIONS)."""
    groups: defaultdict[Any, Figures] = defaultdict(Figures)
    for gather in (_first_responses, _resolutions, _ratings):
        gather(session, scope, dimension, groups)
    return groups


def backlog_by_agent(session: Session, assignee_id: str | None) -> defaultdict[Any, Backlog]:
    """Open tickets now, counted per assignee, status and priority in SQL."""
    query = (
        select(Ticket.assignee_id, Ticket.status, Ticket.priority, func.count())
        .where(Ticket.status.in_(OPEN_STATUSES))
        .group_by(Ticket.assignee_id, Ticket.status, Ticket.priority)
    )
    if assignee_id is not None:
        query = query.where(Ticket.assignee_id == assignee_id)
    backlogs: defaultdict[Any, Backlog] = defaultdict(Backlog)
    for agent, status, priority, count in session.execute(query):
        backlogs[agent].add(status, priority, int(count))
    return backlogs


# --- the report -----------------------------------------------------------------------------


def _agent_order(agents: set[str | None]) -> list[str | None]:
    """Assignees by id, unassigned tickets last."""
    return sorted(agents, key=lambda agent: (agent is None, agent or ""))


def _overall_backlog(backlogs: dict[Any, Backlog]) -> Backlog:
    total = Backlog()
    for backlog in backlogs.values():
        total.by_status.update(backlog.by_status)
        total.by_priority.update(backlog.by_priority)
    return total


def support_report(session: Session, scope: Scope) -> dict[str, Any]:
    """The whole report: backlog, SLA, times and CSAT overall, by agent and by period."""
    backlogs = backlog_by_agent(session, scope.assignee_id)
    overall = figures_by(session, scope, "overall")[None]
    by_agent = figures_by(session, scope, "agent")
    by_period = figures_by(session, scope, "period")
    agents = _agent_order(set(backlogs) | set(by_agent))
    return {
        "from": scope.first.isoformat(),
        "to": scope.last.isoformat(),
        "period": scope.period,
        "assignee_id": scope.assignee_id,
        "as_of": scope.now,
        "backlog": _overall_backlog(backlogs).view(),
        **overall.view(),
        "by_agent": [
            {"assignee_id": agent, "backlog": backlogs[agent].view(), **by_agent[agent].view()}
            for agent in agents
        ],
        "by_period": [
            {**period_view(start, scope.period), **by_period[start.isoformat()].view()}
            for start in period_starts(scope.first, scope.last, scope.period)
        ],
    }
