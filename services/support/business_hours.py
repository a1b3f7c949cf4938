"""Business-hours arithmetic for SLA clocks: pure functions, no database.

A calendar is a time zone, the working days (Monday = 0 ... Sunday = 6) and one window
per working day, from `start` to `end` local time (`end` may be "24:00" for "until
midnight"). Windows that span midnight (night shifts) and several windows a day (a lunch
break) are not supported: one window per day is what the SLA policies offer. No calendar
(`None`) means round the clock, every day.

Business time is measured in real seconds inside the windows: each day's window is placed
on the time line in its zone, so a DST switch moves the window in UTC and a window that
contains the switch is an hour shorter (or longer). A start outside business hours
counts from the next opening. Long spans step by whole days (each day's window is cached),
never minute by minute.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

MINUTES_PER_DAY = 24 * 60
TIME_OF_DAY = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$|^24:00$")
ONE_DAY = timedelta(days=1)
# (opening, closing) of one working day, as UTC moments.
Window = tuple[datetime, datetime]


@dataclass(frozen=True)
class BusinessCalendar:
    """Working days and one daily window (minutes after local midnight) in a time zone."""

    zone: ZoneInfo
    days: frozenset[int]
    opens: int
    closes: int

    def __post_init__(self) -> None:
        if not self.days or not self.days <= set(range(7)):
            raise ValueError("a calendar needs working days between 0 (Monday) and 6 (Sunday)")
        if not 0 <= self.opens < self.closes <= MINUTES_PER_DAY:
            raise ValueError("a calendar's window must end after it starts, within the day")


@functools.cache
def timezone_names() -> frozenset[str]:
    """The IANA time zone names this machine knows."""
    return frozenset(available_timezones())


def is_timezone(name: Any) -> bool:
    """Whether `name` is a valid IANA time zone name."""
    return isinstance(name, str) and name in timezone_names()


def minutes_of(text: str) -> int:
    """ "09:30" -> 570; "24:00" -> 1440; ValueError for anything else."""
    if not isinstance(text, str) or not TIME_OF_DAY.match(text):
        raise ValueError(f"not a time of day HH:MM: {text!r}")
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def parse_calendar(spec: Mapping[str, Any] | None) -> BusinessCalendar | None:
    """A policy's stored calendar (`{"timezone", "days", "start", "end"}`) or None (24/7)."""
    if spec is None:
        return None
    try:
        zone = ZoneInfo(spec["timezone"])
    except (ZoneInfoNotFoundError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"not a time zone: {spec.get('timezone')!r}") from error
    return BusinessCalendar(
        zone=zone,
        days=frozenset(int(day) for day in spec["days"]),
        opens=minutes_of(spec["start"]),
        closes=minutes_of(spec["end"]),
    )


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("business-hours arithmetic needs time-zone aware datetimes")
    return moment.astimezone(UTC)


def _local(day: date, minute: int, zone: ZoneInfo) -> datetime:
    """The UTC moment of `minute` after local midnight of `day` (1440: the next midnight)."""
    if minute == MINUTES_PER_DAY:
        day, minute = day + ONE_DAY, 0
    wall = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)
    return wall.astimezone(UTC)


@functools.lru_cache(maxsize=8192)
def day_window(calendar: BusinessCalendar, day: date) -> Window | None:
    """The (opening, closing) UTC moments of a local day, or None if it is not a working day."""
    if day.weekday() not in calendar.days:
        return None
    return _local(day, calendar.opens, calendar.zone), _local(day, calendar.closes, calendar.zone)


def _windows_from(start: datetime, calendar: BusinessCalendar) -> Iterator[Window]:
    """The working windows that end after `start`, in order, the first clipped to `start`."""
    day = start.astimezone(calendar.zone).date()
    while True:
        window = day_window(calendar, day)
        if window is not None and window[1] > start:
            yield max(window[0], start), window[1]
        day += ONE_DAY


def business_seconds_between(
    start: datetime, end: datetime, calendar: BusinessCalendar | None
) -> int:
    """Whole business seconds from `start` to `end` (0 if `end` is not after `start`)."""
    start, end = _utc(start), _utc(end)
    if end <= start:
        return 0
    if calendar is None:
        return int((end - start).total_seconds())
    total = 0.0
    for opening, closing in _windows_from(start, calendar):
        if opening >= end:
            break
        total += (min(closing, end) - opening).total_seconds()
    return int(total)


def add_business_seconds(
    start: datetime, seconds: float, calendar: BusinessCalendar | None
) -> datetime:
    """The UTC moment when `seconds` of business time have passed since `start`.

    Zero or fewer seconds: `start` itself (the time was used up already). A target that
    ends exactly at a closing time ends then, not at the next opening.
    """
    start = _utc(start)
    if seconds <= 0:
        return start
    if calendar is None:
        return start + timedelta(seconds=seconds)
    remaining = timedelta(seconds=seconds)
    for opening, closing in _windows_from(start, calendar):
        available = closing - opening
        if remaining <= available:
            return opening + remaining
        remaining -= available
    raise AssertionError("unreachable: a calendar always has another working day")
