"""The support report: every figure of a fixed data set against a hand computation.

"Now" is 2026-08-15 12:00 UTC. Tickets (created, first response / due, resolved / due /
breach stamp, status, priority, assignee) and ratings are below; the comments by each
test work every figure out by hand. Each test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.support import reports_api
from services.support.models import CsatRating, Ticket
from services.support.tests.conftest import token_for

ALICE = "a11ce000-0000-4000-8000-00000000000a"
BOB = "b0b00000-0000-4000-8000-00000000000b"
BASE = "/api/v1/reports/support"
JULY = {"from": "2026-07-01", "to": "2026-07-31"}
NOW = datetime(2026, 8, 15, 12, tzinfo=UTC)


def at(month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


# name: created, (first response, its due), (resolved, its due, breach stamp), status,
# priority, assignee
TICKETS: dict[str, tuple[Any, ...]] = {
    # met at the very due minute (3,600 s); resolved in 86,400 s, in time
    "T1": (at(7, 1, 9), (at(7, 1, 10), at(7, 1, 10)), (at(7, 2, 9), at(7, 3, 9), None),
           "resolved", "normal", ALICE),
    # answered late (8,100 s); resolved late and stamped (345,600 s)
    "T2": (at(7, 6, 10), (at(7, 6, 12, 15), at(7, 6, 11)),
           (at(7, 10, 10), at(7, 8, 10), at(7, 8, 10)), "closed", "high", ALICE),
    # answered in 45 s; still open
    "T3": (at(7, 13, 8), (at(7, 13, 8, 0, 45), at(7, 13, 9)), (None, None, None),
           "open", "urgent", BOB),
    # never answered and past due at "now": missed
    "T4": (at(7, 20), (None, at(7, 20, 1)), (None, None, None), "new", "urgent", BOB),
    # never answered, not due until after "now": not measured
    "T5": (at(7, 31, 23, 59, 59), (None, at(8, 20)), (None, None, None), "new", "low", None),
    # no SLA policy (no due times): answered in 630 s, resolved in 86,400 s, both met
    "T6": (at(7, 15, 12), (at(7, 15, 12, 10, 30), None), (at(7, 16, 12), None, None),
           "resolved", "low", BOB),
    # created in June (answered in 601 s, in time); resolved 2026-07-01 01:00:31, after
    # its due time but never stamped as breached: met (3,631 s)
    "T7": (datetime(2026, 6, 30, 23, 59, 59, tzinfo=UTC),
           (at(7, 1, 0, 10), at(7, 1, 0, 59, 59)), (at(7, 1, 1, 0, 31), at(7, 1, 0, 30), None),
           "resolved", "normal", ALICE),
    # answered in 1,200 s, in time; resolved, then reopened and now pending: not resolved
    "T8": (at(7, 21, 9), (at(7, 21, 9, 20), at(7, 21, 9, 30)), (at(7, 22, 9), None, None),
           "pending", "high", BOB),
    # created in August, answered in 300 s, in time; open
    "T9": (at(8, 1), (at(8, 1, 0, 5), at(8, 1, 1)), (None, None, None), "open", "normal", ALICE),
    # answered 300 s late; resolved 07-31 23:59:59, late and stamped (2,037,599 s)
    "T10": (at(7, 8, 10), (at(7, 8, 10, 5), at(7, 8, 10)),
            (at(7, 31, 23, 59, 59), at(7, 31, 12), at(7, 31, 12)), "closed", "normal", BOB),
    # created in May; resolved 08-01 00:00:00 (83 days: 7,171,200 s), late and stamped
    "T11": (at(5, 10), (at(5, 10, 1), at(5, 10, 2)), (at(8, 1), at(5, 12), at(5, 12)),
            "closed", "normal", ALICE),
}  # fmt: skip
# ticket: rating, assignee kept with the rating, when given
RATINGS = {
    "T1": (5, ALICE, at(7, 3)),
    "T2": (2, ALICE, at(7, 11)),
    "T6": (4, BOB, at(7, 17)),
    "T10": (1, ALICE, at(7, 31, 23, 59, 59)),  # the ticket went to Bob later
    "T7": (5, ALICE, at(8, 1)),
    "T11": (3, ALICE, at(8, 2)),
}


def _ticket(name: str, row: tuple[Any, ...]) -> Ticket:
    created, (answered, answer_due), (resolved, due, breached), status, priority, agent = row
    ticket = Ticket(subject=name, status=status, priority=priority, assignee_id=agent)
    ticket.created_at = ticket.updated_at = created
    ticket.first_responded_at, ticket.first_response_due_at = answered, answer_due
    ticket.resolved_at, ticket.resolution_due_at = resolved, due
    ticket.resolution_breached_at, ticket.sla_breached = breached, breached is not None
    return ticket


@pytest.fixture
def dataset(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reports_api, "_now", lambda: NOW)
    with db.session() as session:
        tickets = {name: _ticket(name, row) for name, row in TICKETS.items()}
        session.add_all(tickets.values())
        session.flush()
        for name, (rating, agent, given) in RATINGS.items():
            ticket_id = tickets[name].id
            session.add(
                CsatRating(ticket_id=ticket_id, rating=rating, assignee_id=agent, created_at=given)
            )


def report(client: Any, **params: str) -> dict[str, Any]:
    response = client.get(BASE, query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def sla(measured: int, met: int, compliance: str | None) -> dict[str, Any]:
    return {"measured": measured, "met": met, "missed": measured - met, "compliance": compliance}


def times(answered: int, response: str | None, resolved: int, resolution: str | None) -> dict:
    return {
        "first_response": {"count": answered, "average_minutes": response},
        "resolution": {"count": resolved, "average_minutes": resolution},
    }


def stars(average: str | None = None, **counts: int) -> dict[str, Any]:
    distribution = {str(rating): counts.get(f"r{rating}", 0) for rating in range(1, 6)}
    return {"count": sum(counts.values()), "average": average, "distribution": distribution}


def backlog(new: int = 0, open_: int = 0, pending: int = 0, **priorities: int) -> dict:
    by_priority = {name: priorities.get(name, 0) for name in ("low", "normal", "high", "urgent")}
    by_status = {"new": new, "open": open_, "pending": pending}
    return {"total": new + open_ + pending, "by_status": by_status, "by_priority": by_priority}


def figures(report_part: dict[str, Any]) -> dict[str, Any]:
    return {key: report_part[key] for key in ("sla", "times", "csat")}


def test_the_july_report_overall(client, dataset):
    body = report(client, **JULY)
    assert (body["from"], body["to"], body["period"]) == ("2026-07-01", "2026-07-31", "month")
    assert body["as_of"] == "2026-08-15T12:00:00Z"
    # open now: T3 open urgent, T4 new urgent, T5 new low, T8 pending high, T9 open normal
    assert body["backlog"] == backlog(2, 2, 1, low=1, normal=1, high=1, urgent=2)
    assert body["sla"] == {
        # created in July: met T1 T3 T6 T8; missed T2 T10 (late), T4 (unanswered, past due);
        # T5 not yet due. 4 / 7 = 0.571428...
        "first_response": sla(7, 4, "0.5714"),
        # resolved in July: met T1 T6 T7 (no breach stamp); missed T2 T10. T8 is pending
        # again, T11 was resolved on 08-01 00:00:00. 3 / 5
        "resolution": sla(5, 3, "0.6000"),
    }
    # answered: T1 3,600 + T2 8,100 + T3 45 + T6 630 + T8 1,200 + T10 300 = 13,875 s
    #   / 6 = 2,312.5 s = 38.54 min
    # resolved: T1 86,400 + T2 345,600 + T6 86,400 + T7 3,631 + T10 2,037,599 = 2,559,630 s
    #   / 5 = 511,926 s = 8,532.1 min
    assert body["times"] == times(6, "38.5", 5, "8532.1")
    # given in July: 5 (T1), 2 (T2), 4 (T6), 1 (T10): 12 / 4
    assert body["csat"] == stars("3.00", r1=1, r2=1, r4=1, r5=1)


def test_the_july_report_by_agent(client, dataset):
    alice, bob, nobody = report(client, **JULY)["by_agent"]
    assert alice["assignee_id"] == ALICE
    assert alice["backlog"] == backlog(open_=1, normal=1)  # T9
    assert figures(alice) == {
        # T1 met, T2 missed
        "sla": {"first_response": sla(2, 1, "0.5000"), "resolution": sla(3, 2, "0.6667")},
        # (3,600 + 8,100) / 2 = 5,850 s = 97.5 min; resolution T1 T2 T7:
        # (86,400 + 345,600 + 3,631) / 3 = 145,210.33 s = 2,420.17 min
        "times": times(2, "97.5", 3, "2420.2"),
        # T1 5, T2 2, T10 1 (rated while Alice had it): 8 / 3 = 2.666...
        "csat": stars("2.67", r1=1, r2=1, r5=1),
    }
    assert bob["assignee_id"] == BOB
    assert bob["backlog"] == backlog(new=1, open_=1, pending=1, high=1, urgent=2)  # T3 T4 T8
    assert figures(bob) == {
        # met T3 T6 T8; missed T4 T10: 3 / 5. Resolution: T6 met, T10 missed
        "sla": {"first_response": sla(5, 3, "0.6000"), "resolution": sla(2, 1, "0.5000")},
        # (45 + 630 + 1,200 + 300) / 4 = 543.75 s = 9.06 min;
        # (86,400 + 2,037,599) / 2 = 1,061,999.5 s = 17,699.99 min
        "times": times(4, "9.1", 2, "17700.0"),
        "csat": stars("4.00", r4=1),  # T6
    }
    # T5: unassigned, open, nothing measured yet
    assert nobody["assignee_id"] is None
    assert nobody["backlog"] == backlog(new=1, low=1)
    assert figures(nobody) == {
        "sla": {"first_response": sla(0, 0, None), "resolution": sla(0, 0, None)},
        "times": times(0, None, 0, None),
        "csat": stars(),
    }


def test_the_july_report_by_iso_week(client, dataset):
    body = report(client, period="week", **JULY)
    assert [(p["period"], p["start"]) for p in body["by_period"]] == [
        ("2026-W27", "2026-06-29"),  # 2026-07-01 is a Wednesday
        ("2026-W28", "2026-07-06"),
        ("2026-W29", "2026-07-13"),
        ("2026-W30", "2026-07-20"),
        ("2026-W31", "2026-07-27"),
    ]
    assert [figures(p) for p in body["by_period"]] == [
        {  # created T1 (met, 3,600 s); resolved T1 (86,400 s) and T7 (3,631 s), both met:
            # 90,031 / 2 = 45,015.5 s = 750.26 min; rated T1 5
            "sla": {"first_response": sla(1, 1, "1.0000"), "resolution": sla(2, 2, "1.0000")},
            "times": times(1, "60.0", 2, "750.3"),
            "csat": stars("5.00", r5=1),
        },
        {  # created T2 and T10, both late: (8,100 + 300) / 2 = 70 min; resolved T2 late
            "sla": {"first_response": sla(2, 0, "0.0000"), "resolution": sla(1, 0, "0.0000")},
            "times": times(2, "70.0", 1, "5760.0"),
            "csat": stars("2.00", r2=1),
        },
        {  # created T3 T6, met: (45 + 630) / 2 = 337.5 s = 5.625 min; resolved T6 in time
            "sla": {"first_response": sla(2, 2, "1.0000"), "resolution": sla(1, 1, "1.0000")},
            "times": times(2, "5.6", 1, "1440.0"),
            "csat": stars("4.00", r4=1),
        },
        {  # created T4 (missed, never answered) and T8 (met, 20 min); nothing resolved
            "sla": {"first_response": sla(2, 1, "0.5000"), "resolution": sla(0, 0, None)},
            "times": times(1, "20.0", 0, None),
            "csat": stars(),
        },
        {  # created T5 (not yet due); resolved T10 late: 2,037,599 s = 33,959.98 min
            "sla": {"first_response": sla(0, 0, None), "resolution": sla(1, 0, "0.0000")},
            "times": times(0, None, 1, "33960.0"),
            "csat": stars("1.00", r1=1),  # T10, given 07-31 23:59:59
        },
    ]


def test_three_months_by_month(client, dataset):
    body = report(client, **{"from": "2026-06-01", "to": "2026-08-31"})
    june, july, august = body["by_period"]
    assert (june["period"], july["period"], august["period"]) == ("2026-06", "2026-07", "2026-08")
    assert figures(june) == {  # created T7 (601 s, in time: 10.02 min)
        "sla": {"first_response": sla(1, 1, "1.0000"), "resolution": sla(0, 0, None)},
        "times": times(1, "10.0", 0, None),
        "csat": stars(),
    }
    assert figures(july) == figures(report(client, **JULY))
    assert figures(august) == {
        # created T9 (300 s, in time); resolved T11 late (83 days = 119,520 min);
        # rated T7 5 and T11 3: 8 / 2
        "sla": {"first_response": sla(1, 1, "1.0000"), "resolution": sla(1, 0, "0.0000")},
        "times": times(1, "5.0", 1, "119520.0"),
        "csat": stars("4.00", r3=1, r5=1),
    }
    # all three months: first response met 1 + 4 + 1 of 1 + 7 + 1 = 6 / 9;
    # answered 13,875 + 601 + 300 = 14,776 s / 8 = 1,847 s = 30.78 min
    assert body["sla"]["first_response"] == sla(9, 6, "0.6667")
    assert body["times"]["first_response"] == {"count": 8, "average_minutes": "30.8"}


def test_one_agents_report(client, dataset):
    body = report(client, assignee_id=BOB, **JULY)
    assert body["assignee_id"] == BOB
    [bob] = body["by_agent"]
    assert bob["assignee_id"] == BOB
    assert body["backlog"] == bob["backlog"] == backlog(1, 1, 1, high=1, urgent=2)
    assert figures(body) == figures(bob)
    assert bob["sla"]["first_response"] == sla(5, 3, "0.6000")
    assert body["by_period"][0]["csat"] == stars("4.00", r4=1)


def test_a_range_with_nothing_in_it(client, dataset):
    body = report(client, **{"from": "2020-01-01", "to": "2020-01-31"})
    assert figures(body) == {
        "sla": {"first_response": sla(0, 0, None), "resolution": sla(0, 0, None)},
        "times": times(0, None, 0, None),
        "csat": stars(),
    }
    assert body["backlog"]["total"] == 5  # the backlog is now, whatever the range
    assert [agent["assignee_id"] for agent in body["by_agent"]] == [ALICE, BOB, None]
    assert [p["period"] for p in body["by_period"]] == ["2020-01"]


def test_an_empty_service_lists_every_status_and_priority(client):
    body = report(client, **JULY)
    assert body["backlog"] == backlog()
    assert body["by_agent"] == []
    assert body["csat"] == stars()


def test_weeks_across_a_new_year_are_iso_weeks(client, db):
    with db.session() as session:
        ticket = Ticket(subject="New year", status="open")
        ticket.created_at = datetime(2027, 1, 1, 10, tzinfo=UTC)
        ticket.first_responded_at = datetime(2027, 1, 1, 10, 1, 30, tzinfo=UTC)
        session.add(ticket)
    body = report(client, period="week", **{"from": "2027-01-01", "to": "2027-01-10"})
    weeks = body["by_period"]
    assert [(week["period"], week["start"]) for week in weeks] == [
        ("2026-W53", "2026-12-28"),  # 2027-01-01 is a Friday of 2026's last ISO week
        ("2027-W01", "2027-01-04"),
    ]
    assert weeks[0]["times"]["first_response"] == {"count": 1, "average_minutes": "1.5"}
    assert weeks[1]["times"]["first_response"] == {"count": 0, "average_minutes": None}


def test_the_default_range_is_the_last_three_months(client, dataset):
    body = report(client, assignee_id="")  # an empty parameter counts as absent
    assert (body["from"], body["to"]) == ("2026-06-01", "2026-08-15")
    assert [p["period"] for p in body["by_period"]] == ["2026-06", "2026-07", "2026-08"]
    assert report(client, to="2026-03-10")["from"] == "2026-01-01"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("colour=red", "colour"),
        ("from=2026-02-30", "from"),
        ("from=20260101", "from"),
        ("to=yesterday", "to"),
        ("from=2026-03-01&to=2026-02-28", "to"),
        ("from=2000-01-01&to=2026-01-01", "to"),
        ("period=week&from=2024-01-01&to=2026-01-01", "to"),
        ("period=quarter", "period"),
        ("assignee_id=nobody", "assignee_id"),
        ("from=2026-01-01&from=2026-02-01", "from"),
    ],
)
def test_bad_parameters_are_422_problems(client, query, field):
    response = client.get(f"{BASE}?{query}")
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]


def test_any_role_may_read_the_report_and_anonymous_callers_may_not(app, anonymous):
    assert anonymous.get(BASE).status_code == 401
    token = token_for(app, role="viewer")
    assert anonymous.get(BASE, headers={"Authorization": f"Bearer {token}"}).status_code == 200
