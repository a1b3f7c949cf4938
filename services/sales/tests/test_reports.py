"""The sales reports: every figure of a fixed data set against a hand computation.

The amounts are chosen so rounding shows: three deals of 333.33 EUR at 25% weigh
249.9975 EUR together (250.00 once rounded; rounding each deal would give 249.99), and
small amounts at 10% and 50% end on half a cent. EUR and USD are mixed, never added.
Each test runs on SQLite and on PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert

from services.sales import deals, pipelines, reports_api, totals
from services.sales.models import Deal, Lead, Pipeline, Stage
from services.sales.tests.conftest import token_for

ALICE = "a11ce000-0000-4000-8000-00000000000a"
BOB = "b0b00000-0000-4000-8000-00000000000b"
UNKNOWN = "5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11"
PARTNERS = "9a7e0000-0000-4000-8000-000000000001"
PARTNER_STAGE = "9a7e0000-0000-4000-8000-000000000011"
S1, S2, S3, S4, S5 = (stage_id for stage_id, _name, _p in pipelines.DEFAULT_STAGES)  # 10..90%
BASE = "/api/v1/reports"
YEAR_2026 = {"from": "2026-01-01", "to": "2026-12-31"}


def eur(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "EUR"}


def usd(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "USD"}


def at(year: int, month: int, day: int, *hms: int) -> datetime:
    return datetime(year, month, day, *hms, tzinfo=UTC)


# Open deals: amount, currency, stage, owner, expected close, pipeline, lead (a key below)
OPEN_DEALS = [
    ("333.33", "EUR", S2, ALICE, date(2026, 7, 15), None, None),  # 1: 25%, July
    ("333.33", "EUR", S2, ALICE, date(2026, 7, 15), None, None),  # 2: 25%, July
    ("333.33", "EUR", S2, ALICE, date(2026, 7, 15), None, None),  # 3: 25%, July
    ("10.01", "USD", S2, BOB, date(2026, 8, 10), None, None),  # 4: 25%, August
    ("0.05", "EUR", S1, BOB, None, None, None),  # 5: 10%, no close date
    ("0.03", "USD", S3, ALICE, date(2026, 8, 31), None, None),  # 6: 50%, August
    ("1000.00", "EUR", S5, None, date(2026, 6, 30), None, None),  # 7: 90%, June, no owner
    ("200.00", "EUR", PARTNER_STAGE, ALICE, date(2026, 7, 20), PARTNERS, "g"),  # 8: 40%
]
# Closed deals: status, amount, currency, owner, created, closed, lead
CLOSED_DEALS = [
    ("won", "100.10", "EUR", ALICE, at(2026, 6, 1), at(2026, 7, 11), "e"),  # W1: 40 d
    ("won", "50.05", "EUR", ALICE, at(2026, 7, 1, 12), at(2026, 7, 31, 23, 59, 59), None),  # W2
    ("won", "20.00", "USD", BOB, at(2026, 5, 1), at(2026, 8, 1), "h"),  # W3: 92 d
    ("won", "0.01", "USD", BOB, at(2026, 8, 1), at(2026, 10, 1), None),  # W4: 61 d
    ("won", "7.77", "EUR", ALICE, at(2026, 6, 30), at(2026, 6, 30, 23, 59, 59), None),  # W5
    ("lost", "999.00", "EUR", ALICE, at(2026, 7, 1), at(2026, 7, 20), "f"),  # L1
    ("lost", "5.00", "EUR", BOB, at(2026, 9, 1), at(2026, 9, 15), None),  # L2
    ("lost", "1.00", "EUR", None, at(2025, 12, 1), at(2025, 12, 31, 23, 59, 59), None),  # L3
]
# Leads: owner, created, status, qualified, converted. Seven created in 2026 (a-g):
# qualified c d e f g, converted e f g, won e (its deal W1); h and i fall outside 2026.
QUALIFIED, CONVERTED = at(2026, 4, 10), at(2026, 5, 10)
LEADS = {
    "a": (ALICE, at(2026, 3, 1), "new", None, None),
    "b": (BOB, at(2026, 3, 2), "working", None, None),
    "c": (ALICE, at(2026, 4, 1), "qualified", QUALIFIED, None),
    "d": (BOB, at(2026, 4, 2), "unqualified", QUALIFIED, None),
    "e": (ALICE, at(2026, 5, 1), "converted", QUALIFIED, CONVERTED),
    "f": (BOB, at(2026, 5, 2), "converted", None, CONVERTED),
    "g": (BOB, at(2026, 6, 1), "converted", None, CONVERTED),
    "h": (BOB, at(2025, 12, 31, 23), "converted", None, CONVERTED),
    "i": (ALICE, at(2027, 1, 1), "new", None, None),
}


def _add_partners_pipeline(session: Any) -> None:
    now = at(2026, 1, 1)
    session.add(Pipeline(id=PARTNERS, name="Partners", created_at=now, updated_at=now))
    session.flush()
    stage = {"id": PARTNER_STAGE, "pipeline_id": PARTNERS, "name": "Referral", "position": 0}
    session.execute(insert(Stage).values(**stage, probability=40, created_at=now, updated_at=now))


def _add_leads(session: Any) -> dict[str, str]:
    ids = {}
    for key, (owner, created, status, qualified, converted) in LEADS.items():
        lead = Lead(owner_id=owner, created_at=created, updated_at=created, status=status)
        lead.qualified_at, lead.converted_at = qualified, converted
        session.add(lead)
        session.flush()
        ids[key] = lead.id
    return ids


def _add_deal(
    session: Any,
    amount: str,
    currency: str,
    stage: str,
    owner: str | None,
    close: date | None,
    pipeline_id: str | None,
    lead_id: str | None,
) -> Deal:
    data = {"name": f"{amount} {currency}", "amount": Decimal(amount), "currency": currency}
    data |= {"stage_id": stage, "owner_id": owner, "expected_close_date": close}
    return deals.create_deal(
        session, {**data, "pipeline_id": pipeline_id, "lead_id": lead_id}, None
    )


@pytest.fixture
def dataset(db: Any) -> None:
    """The deals and leads above, with the running totals rebuilt from them."""
    with db.session() as session:
        _add_partners_pipeline(session)
        leads = _add_leads(session)
        for *deal, lead in OPEN_DEALS:
            _add_deal(session, *deal, leads.get(lead))
        for status, amount, currency, owner, created, closed, lead in CLOSED_DEALS:
            deal = _add_deal(session, amount, currency, S3, owner, None, None, leads.get(lead))
            deal.status, deal.created_at, deal.closed_at = status, created, closed
        totals.rebuild(session)


def report(client: Any, name: str, **params: str) -> dict[str, Any]:
    response = client.get(f"{BASE}/{name}", query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


# --- pipeline -------------------------------------------------------------------------------


def _stage(count: int, value: list, weighted: list) -> dict[str, Any]:
    return {"count": count, "value": value, "weighted_value": weighted}


def test_pipeline_report_sums_open_deals_per_stage_and_rounds_once(client, dataset):
    body = report(client, "pipeline")
    assert body["pipeline_id"] == pipelines.DEFAULT_PIPELINE_ID
    figures = [
        {key: stage[key] for key in ("count", "value", "weighted_value")}
        for stage in body["stages"]
    ]
    assert [s["name"] for s in body["stages"]] == [n for _i, n, _p in pipelines.DEFAULT_STAGES]
    assert [s["probability"] for s in body["stages"]] == [10, 25, 50, 75, 90]
    assert figures == [
        _stage(1, [eur("0.05")], [eur("0.01")]),  # 0.05 x 10% = 0.005 -> 0.01 (half-up)
        # 3 x 333.33 = 999.99 x 25% = 249.9975 -> 250.00 (per deal: 3 x 83.33 = 249.99)
        # 10.01 x 25% = 2.5025 -> 2.50
        _stage(4, [eur("999.99"), usd("10.01")], [eur("250.00"), usd("2.50")]),
        _stage(1, [usd("0.03")], [usd("0.02")]),  # 0.03 x 50% = 0.015 -> 0.02
        _stage(0, [], []),
        _stage(1, [eur("1000.00")], [eur("900.00")]),  # 1000.00 x 90%
    ]
    # EUR 0.05 + 999.99 + 1000.00 = 2000.04; USD 10.01 + 0.03 = 10.04
    # weighted EUR 0.005 + 249.9975 + 900 = 1150.0025 -> 1150.00 (not 0.01+250.00+900.00)
    # weighted USD 2.5025 + 0.015 = 2.5175 -> 2.52
    assert body["totals"] == _stage(
        7, [eur("2000.04"), usd("10.04")], [eur("1150.00"), usd("2.52")]
    )


def test_pipeline_report_for_one_owner_and_another_pipeline(client, dataset):
    alice = report(client, "pipeline", owner_id=ALICE)
    # deals 1-3 (999.99 EUR at 25%) and 6 (0.03 USD at 50%)
    assert alice["totals"] == _stage(4, [eur("999.99"), usd("0.03")], [eur("250.00"), usd("0.02")])
    assert [s["count"] for s in alice["stages"]] == [0, 3, 1, 0, 0]
    partners = report(client, "pipeline", pipeline_id=PARTNERS)
    assert [s["stage_id"] for s in partners["stages"]] == [PARTNER_STAGE]
    assert partners["totals"] == _stage(1, [eur("200.00")], [eur("80.00")])  # 200 x 40%


def test_pipeline_report_reads_the_running_totals(client, db, dataset):
    """A deal written behind the totals' back counts only once they are rebuilt."""
    before = report(client, "pipeline")
    with db.session() as session:
        raw = Deal(name="raw", pipeline_id=pipelines.DEFAULT_PIPELINE_ID, stage_id=S4)
        raw.amount, raw.currency = Decimal("4.00"), "EUR"
        session.add(raw)
    assert report(client, "pipeline") == before
    with db.session() as session:
        totals.rebuild(session)
    negotiation = report(client, "pipeline")["stages"][3]
    assert negotiation["stage_id"] == S4
    assert negotiation["count"] == 1
    assert negotiation["value"] == [eur("4.00")]
    assert negotiation["weighted_value"] == [eur("3.00")]  # 4.00 x 75%


def test_pipeline_report_is_exact_on_totals_kept_deal_by_deal(client, db):
    """No rebuild: each change adjusts the totals (float-backed NUMERIC on SQLite)."""
    with db.session() as session:
        for amount in ("0.10", "0.20", "333.33", "333.33", "333.33", "0.07"):
            _add_deal(session, amount, "EUR", S2, ALICE, None, None, None)
        won = _add_deal(session, "0.07", "EUR", S2, ALICE, None, None, None)
        before = totals.snapshot(won)
        won.status, won.closed_at = "won", at(2026, 7, 1)
        totals.moved(session, before, won)
    # 0.10 + 0.20 + 3 x 333.33 + 0.07 = 1000.36; x 25% = 250.09 exactly
    expected = _stage(6, [eur("1000.36")], [eur("250.09")])
    assert report(client, "pipeline")["totals"] == expected
    with db.session() as session:
        totals.rebuild(session)
    assert report(client, "pipeline")["totals"] == expected


def test_empty_pipeline_answers_zeros_and_empty_money_lists(client):
    body = report(client, "pipeline")
    assert all(s["count"] == 0 and s["value"] == [] for s in body["stages"])
    assert body["totals"] == _stage(0, [], [])


# --- forecast -------------------------------------------------------------------------------


def _won(count: int, value: list) -> dict[str, Any]:
    return {"count": count, "value": value}


def _month(month: str, count: int, value: list, weighted: list, won: tuple = (0, [])) -> dict:
    return {"month": month, **_stage(count, value, weighted), "won": _won(*won)}


def test_forecast_lists_every_month_with_open_and_won_deals(client, dataset):
    body = report(client, "forecast", **{"from": "2026-07", "to": "2026-09"})
    assert (body["from"], body["to"]) == ("2026-07", "2026-09")
    assert body["months"] == [
        # open: 1-3 (999.99 at 25% = 249.9975) + 8 (200.00 at 40% = 80) = 1199.99, 329.9975
        # won: W1 100.10 + W2 50.05 (closed 07-31 23:59:59) = 150.15 EUR
        _month("2026-07", 4, [eur("1199.99")], [eur("330.00")], (2, [eur("150.15")])),
        # open: 4 (10.01 at 25% = 2.5025) + 6 (0.03 at 50% = 0.015) = 10.04, 2.5175
        # won: W3 (closed 08-01 00:00:00)
        _month("2026-08", 2, [usd("10.04")], [usd("2.52")], (1, [usd("20.00")])),
        _month("2026-09", 0, [], []),
    ]  # deal 7 (June) is outside the range; W4 closed in October
    assert body["no_close_date"] == _stage(1, [eur("0.05")], [eur("0.01")])  # deal 5


def test_forecast_by_pipeline_and_owner(client, dataset):
    partners = report(client, "forecast", pipeline_id=PARTNERS, **{"from": "2026-07"})
    assert partners["to"] == "2026-12"  # six months by default
    assert partners["months"][0] == _month("2026-07", 1, [eur("200.00")], [eur("80.00")])
    assert all(m["count"] == 0 for m in partners["months"][1:])
    assert partners["no_close_date"] == _stage(0, [], [])
    bob = report(client, "forecast", owner_id=BOB, **{"from": "2026-07", "to": "2026-08"})
    assert bob["months"] == [
        _month("2026-07", 0, [], []),
        _month("2026-08", 1, [usd("10.01")], [usd("2.50")], (1, [usd("20.00")])),  # 4; W3
    ]
    assert bob["no_close_date"] == _stage(1, [eur("0.05")], [eur("0.01")])


# --- win rate -------------------------------------------------------------------------------


def _rate(won: int, lost: int, rate: str | None, value: list) -> dict[str, Any]:
    return {"won": won, "lost": lost, "win_rate": rate, "won_value": value}


def test_win_rate_overall_by_owner_and_by_quarter(client, dataset):
    body = report(client, "win-rate", period="quarter", **YEAR_2026)
    # won W1-W5, lost L1, L2 (L3 closed in 2025): 5 / 7 = 0.714285...
    # EUR 100.10 + 50.05 + 7.77 = 157.92; USD 20.00 + 0.01 = 20.01
    assert body["overall"] == _rate(5, 2, "0.7143", [eur("157.92"), usd("20.01")])
    assert body["by_owner"] == [
        {"owner_id": ALICE, **_rate(3, 1, "0.7500", [eur("157.92")])},  # W1 W2 W5 / L1
        {"owner_id": BOB, **_rate(2, 1, "0.6667", [usd("20.01")])},  # W3 W4 / L2: 2/3
    ]
    assert body["by_period"] == [
        {"period": "2026-Q1", **_rate(0, 0, None, [])},
        {"period": "2026-Q2", **_rate(1, 0, "1.0000", [eur("7.77")])},  # W5 (06-30 23:59:59)
        # W1 W2 W3 / L1 L2: 3/5; 100.10 + 50.05 EUR, 20.00 USD
        {"period": "2026-Q3", **_rate(3, 2, "0.6000", [eur("150.15"), usd("20.00")])},
        {"period": "2026-Q4", **_rate(1, 0, "1.0000", [usd("0.01")])},  # W4
    ]


def test_win_rate_by_month_and_by_year_keeps_range_edges(client, dataset):
    july = report(client, "win-rate", **{"from": "2026-07-01", "to": "2026-07-31"})
    # W1, W2 (07-31 23:59:59 is in), L1; W3 (08-01 00:00) is out: 2/3
    assert july["by_period"] == [{"period": "2026-07", **_rate(2, 1, "0.6667", [eur("150.15")])}]
    years = report(client, "win-rate", period="year", **{"from": "2025-12-01", "to": "2026-12-31"})
    assert years["by_period"] == [
        {"period": "2025", **_rate(0, 1, "0.0000", [])},  # L3, no owner
        {"period": "2026", **_rate(5, 2, "0.7143", [eur("157.92"), usd("20.01")])},
    ]
    assert years["by_owner"][-1] == {"owner_id": None, **_rate(0, 1, "0.0000", [])}


def test_win_rate_for_one_owner_and_for_nothing_closed(client, dataset):
    bob = report(client, "win-rate", owner_id=BOB, **YEAR_2026)
    assert bob["overall"] == _rate(2, 1, "0.6667", [usd("20.01")])
    assert [row["owner_id"] for row in bob["by_owner"]] == [BOB]
    empty = report(client, "win-rate", **{"from": "2020-01-01", "to": "2020-02-15"})
    assert empty["overall"] == _rate(0, 0, None, [])
    assert empty["by_owner"] == []
    assert [p["period"] for p in empty["by_period"]] == ["2020-01", "2020-02"]


# --- funnel ---------------------------------------------------------------------------------


def test_funnel_counts_leads_through_to_won_deals(client, dataset):
    body = report(client, "funnel", **YEAR_2026)
    # leads a-g (h: 2025, i: 2027); qualified c d e f g (qualified_at or status);
    # converted e f g; won e (deal W1); f's deal is lost, g's deal is open
    assert body["steps"] == [
        {"name": "leads", "count": 7},
        {"name": "qualified", "count": 5},
        {"name": "converted", "count": 3},
        {"name": "won", "count": 1},
    ]
    assert body["conversion"] == {
        "qualified_from_leads": "0.7143",  # 5/7 = 0.714285...
        "converted_from_qualified": "0.6000",  # 3/5
        "won_from_converted": "0.3333",  # 1/3
        "won_from_leads": "0.1429",  # 1/7 = 0.142857...
    }


def test_funnel_for_one_owner_and_an_empty_range(client, dataset):
    alice = report(client, "funnel", owner_id=ALICE, **YEAR_2026)
    assert [step["count"] for step in alice["steps"]] == [3, 2, 1, 1]  # a c e; c e; e; e
    assert alice["conversion"] == {
        "qualified_from_leads": "0.6667",
        "converted_from_qualified": "0.5000",
        "won_from_converted": "1.0000",
        "won_from_leads": "0.3333",
    }
    empty = report(client, "funnel", **{"from": "2020-01-01", "to": "2020-12-31"})
    assert [step["count"] for step in empty["steps"]] == [0, 0, 0, 0]
    assert set(empty["conversion"].values()) == {None}


# --- sales cycle ----------------------------------------------------------------------------


def test_sales_cycle_averages_and_medians_days_to_win(client, dataset):
    body = report(client, "sales-cycle", **YEAR_2026)
    # seconds: W1 3,456,000 (40 d); W2 2,635,199 (30 d + 43,199 s); W3 7,948,800 (92 d);
    # W4 5,270,400 (61 d); W5 86,399. Sum 19,396,798 / 5 / 86,400 = 44.89999... -> 44.9
    assert body["overall"] == {"count": 5, "average_days": "44.9", "median_days": "40.0"}
    assert body["by_owner"] == [
        # Alice W1 W2 W5: 6,177,598 / 3 / 86,400 = 23.833 -> 23.8; median W2 = 30.49999 -> 30.5
        {"owner_id": ALICE, "count": 3, "average_days": "23.8", "median_days": "30.5"},
        # Bob W3 W4: (92 + 61) / 2 = 76.5; median of two = their mean
        {"owner_id": BOB, "count": 2, "average_days": "76.5", "median_days": "76.5"},
    ]


def test_sales_cycle_median_of_an_even_count_and_an_empty_range(client, dataset):
    body = report(client, "sales-cycle", **{"from": "2026-07-01", "to": "2026-12-31"})
    # W1 W2 W3 W4: 19,310,399 / 4 / 86,400 = 55.874997 -> 55.9; median (40 + 61) / 2 = 50.5
    assert body["overall"] == {"count": 4, "average_days": "55.9", "median_days": "50.5"}
    empty = report(
        client, "sales-cycle", owner_id=BOB, **{"from": "2020-01-01", "to": "2020-12-31"}
    )
    assert empty["overall"] == {"count": 0, "average_days": None, "median_days": None}
    assert empty["by_owner"] == []


# --- parameters, defaults, access -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("pipeline?colour=red", "colour"),
        ("pipeline?pipeline_id=not-a-uuid", "pipeline_id"),
        ("pipeline?owner_id=42", "owner_id"),
        ("forecast?from=2026-13", "from"),
        ("forecast?from=2026-1", "from"),
        ("forecast?to=2026-07-01", "to"),
        ("forecast?from=2026-07&to=2026-06", "to"),
        ("forecast?from=2026-01&to=2031-01", "to"),  # 61 months
        ("win-rate?from=2026-02-30", "from"),
        ("win-rate?from=20260101", "from"),
        ("win-rate?period=week", "period"),
        ("win-rate?from=2026-03-01&to=2026-02-28", "to"),
        ("win-rate?from=2000-01-01&to=2026-01-01", "to"),
        ("win-rate?from=2026-01-01&from=2026-02-01", "from"),
        ("funnel?period=month", "period"),
        ("funnel?to=yesterday", "to"),
        ("sales-cycle?owner_id=nobody", "owner_id"),
    ],
)
def test_bad_parameters_are_422_problems(client, path, field):
    response = client.get(f"{BASE}/{path}")
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]


@pytest.mark.parametrize("name", ["pipeline", "forecast"])
def test_an_unknown_pipeline_is_404(client, name):
    response = client.get(f"{BASE}/{name}", query_string={"pipeline_id": UNKNOWN})
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_default_ranges_follow_today(client, monkeypatch):
    monkeypatch.setattr(reports_api, "_today", lambda: date(2026, 8, 15))
    forecast = report(client, "forecast")
    months = ["2026-08", "2026-09", "2026-10", "2026-11", "2026-12", "2027-01"]
    assert [m["month"] for m in forecast["months"]] == months
    win_rate = report(client, "win-rate", owner_id="")  # an empty parameter counts as absent
    assert (win_rate["from"], win_rate["to"]) == ("2025-09-01", "2026-08-15")
    assert len(win_rate["by_period"]) == 12
    assert report(client, "funnel", to="2026-03-31")["from"] == "2025-04-01"


@pytest.mark.parametrize("name", ["pipeline", "forecast", "win-rate", "funnel", "sales-cycle"])
def test_any_role_may_read_reports_and_anonymous_callers_may_not(app, anonymous, name):
    assert anonymous.get(f"{BASE}/{name}").status_code == 401
    token = token_for(app, role="viewer")
    response = anonymous.get(f"{BASE}/{name}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
