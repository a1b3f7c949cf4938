"""Business-hours arithmetic: weekends, DST switches, starts outside hours, long spans."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.support.business_hours import (
    add_business_seconds,
    business_seconds_between,
    is_timezone,
    parse_calendar,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
HOUR = 3600
OFFICE = parse_calendar(
    {"timezone": "Europe/Berlin", "days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}
)


def berlin(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN)


def test_friday_afternoon_plus_two_hours_is_monday_ten():
    due = add_business_seconds(berlin(2026, 6, 5, 16, 0), 2 * HOUR, OFFICE)
    assert due == berlin(2026, 6, 8, 10, 0)
    assert due.tzinfo is UTC


def test_a_span_over_a_weekend_counts_only_the_working_hours():
    friday, monday = berlin(2026, 6, 5, 15, 0), berlin(2026, 6, 8, 11, 30)
    assert business_seconds_between(friday, monday, OFFICE) == 2 * HOUR + int(2.5 * HOUR)


def test_the_dst_switch_in_berlin_keeps_local_business_hours():
    # Clocks go forward on Sunday 29 March 2026: Friday is UTC+1, Monday UTC+2.
    friday = berlin(2026, 3, 27, 16, 0)
    due = add_business_seconds(friday, 2 * HOUR, OFFICE)
    assert due == berlin(2026, 3, 30, 10, 0)
    assert due == datetime(2026, 3, 30, 8, 0, tzinfo=UTC)  # not 09:00 UTC: the zone moved
    assert business_seconds_between(friday, due, OFFICE) == 2 * HOUR


def test_a_window_containing_the_dst_switch_is_an_hour_shorter():
    every_day = parse_calendar(
        {"timezone": "Europe/Berlin", "days": list(range(7)), "start": "00:00", "end": "24:00"}
    )
    saturday_noon, sunday_noon = berlin(2026, 3, 28, 12, 0), berlin(2026, 3, 29, 12, 0)
    assert business_seconds_between(saturday_noon, sunday_noon, every_day) == 23 * HOUR
    assert add_business_seconds(saturday_noon, 23 * HOUR, every_day) == sunday_noon
    # In autumn the day is 25 hours long.
    assert (
        business_seconds_between(
            berlin(2026, 10, 24, 12, 0), berlin(2026, 10, 25, 12, 0), every_day
        )
        == 25 * HOUR
    )


def test_a_start_on_saturday_counts_from_monday_opening():
    due = add_business_seconds(berlin(2026, 6, 6, 11, 0), 30 * 60, OFFICE)
    assert due == berlin(2026, 6, 8, 9, 30)
    assert (
        business_seconds_between(berlin(2026, 6, 6, 11, 0), berlin(2026, 6, 8, 9, 0), OFFICE) == 0
    )


def test_a_start_before_opening_or_after_closing_waits_for_the_next_opening():
    assert add_business_seconds(berlin(2026, 6, 9, 7, 0), HOUR, OFFICE) == berlin(2026, 6, 9, 10)
    assert add_business_seconds(berlin(2026, 6, 9, 18, 0), HOUR, OFFICE) == berlin(2026, 6, 10, 10)


def test_a_target_ending_exactly_at_closing_ends_then():
    assert add_business_seconds(berlin(2026, 6, 5, 15, 0), 2 * HOUR, OFFICE) == berlin(
        2026, 6, 5, 17, 0
    )
    assert add_business_seconds(berlin(2026, 6, 5, 15, 0), 2 * HOUR + 1, OFFICE) == berlin(
        2026, 6, 8, 9, 0, 1
    )
    assert (
        business_seconds_between(berlin(2026, 6, 5, 9), berlin(2026, 6, 5, 17), OFFICE) == 8 * HOUR
    )


def test_round_the_clock_is_plain_wall_time():
    start = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)
    assert add_business_seconds(start, 5 * HOUR, None) == start + timedelta(hours=5)
    assert business_seconds_between(start, start + timedelta(days=3), None) == 72 * HOUR
    assert business_seconds_between(start, start - timedelta(hours=1), None) == 0


def test_zero_seconds_and_backwards_spans():
    saturday = berlin(2026, 6, 6, 11, 0)
    assert add_business_seconds(saturday, 0, OFFICE) == saturday
    assert add_business_seconds(saturday, -50, OFFICE) == saturday
    assert business_seconds_between(berlin(2026, 6, 9, 12), berlin(2026, 6, 9, 11), OFFICE) == 0


def test_long_spans_are_exact_and_fast():
    monday = berlin(2026, 1, 5, 9, 0)
    # Ten working weeks of 40 hours end on a Friday at closing, DST switch included.
    due = add_business_seconds(monday, 10 * 40 * HOUR, OFFICE)
    assert due == berlin(2026, 3, 13, 17, 0)
    later = add_business_seconds(monday, 20 * 40 * HOUR, OFFICE)
    assert later == berlin(2026, 5, 22, 17, 0)
    assert business_seconds_between(monday, later, OFFICE) == 20 * 40 * HOUR
    started = time.perf_counter()
    add_business_seconds(monday, 525_600 * 60, OFFICE)  # a year of business minutes
    business_seconds_between(monday, monday + timedelta(days=1500), OFFICE)
    assert time.perf_counter() - started < 1.0


def test_another_zone_and_partial_week():
    calendar = parse_calendar(
        {"timezone": "America/New_York", "days": [1, 3], "start": "08:30", "end": "12:00"}
    )
    # Monday 10:00 in New York: Tuesday 08:30 is the next opening.
    start = datetime(2026, 11, 2, 10, 0, tzinfo=NEW_YORK)
    assert add_business_seconds(start, 4 * HOUR, calendar) == datetime(
        2026, 11, 5, 9, 0, tzinfo=NEW_YORK
    )


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError):
        add_business_seconds(datetime(2026, 6, 5, 16, 0), HOUR, OFFICE)


@pytest.mark.parametrize(
    "spec",
    [
        {"timezone": "Mars/Olympus", "days": [0], "start": "09:00", "end": "17:00"},
        {"timezone": "Europe/Berlin", "days": [], "start": "09:00", "end": "17:00"},
        {"timezone": "Europe/Berlin", "days": [7], "start": "09:00", "end": "17:00"},
        {"timezone": "Europe/Berlin", "days": [0], "start": "17:00", "end": "09:00"},
        {"timezone": "Europe/Berlin", "days": [0], "start": "9:00", "end": "17:00"},
    ],
)
def test_bad_calendars_are_refused(spec):
    with pytest.raises(ValueError):
        parse_calendar(spec)


def test_timezone_names():
    assert is_timezone("Europe/Berlin") and is_timezone("UTC")
    assert not is_timezone("Europe") and not is_timezone("../etc/passwd") and not is_timezone(3)
