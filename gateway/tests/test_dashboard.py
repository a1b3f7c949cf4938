"""The dashboard, against stand-in services on local ports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask

from gateway.app import create_app
from gateway.tests.conftest import close_app, gateway_config
from gateway.tests.fake_services import FakeService, ServiceUrls, token_for
from shared.events import utcnow

# Generous: a loaded CI machine must not make a healthy stand-in look slow.
TIMEOUT = 2.0


def eur(amount: str) -> list[dict[str, str]]:
    return [{"amount": amount, "currency": "EUR"}]


PIPELINE = {
    "pipeline_id": "p-1",
    "totals": {"count": 3, "value": eur("3000.00"), "weighted_value": eur("1200.0000")},
}
FORECAST = {
    "from": "2026-11",
    "to": "2027-04",
    "months": [
        {"month": "2026-11", "count": 1, "value": eur("1000.00"), "weighted_value": eur("500.0")},
        {
            "month": "2026-12",
            "count": 2,
            "value": [*eur("250.50"), {"amount": "10.00", "currency": "USD"}],
            "weighted_value": eur("100.25"),
        },
    ],
}
WIN_RATE = {"overall": {"won": 2, "lost": 2, "win_rate": "0.5000", "won_value": eur("800.00")}}
SUPPORT = {
    "backlog": {"total": 7, "by_status": {}, "by_priority": {"urgent": 1}},
    "sla": {"first_response": {"compliance": "0.9000"}, "resolution": {"compliance": "0.7500"}},
    "csat": {"count": 4, "average": "4.25"},
}
MARKETING = {
    "campaigns_sent": 2,
    "sent": 100,
    "open_rate": "0.4000",
    "click_rate": "0.1000",
    "bounce_rate": "0.0200",
    "unsubscribe_rate": "0.0100",
    "churn_rate": "0.0500",
    "customers_at_start": 20,
    "churned": 1,
    "at_risk": 3,
    "customers": 19,
    "average_lifetime_value": eur("1500.00"),
}


@pytest.fixture
def services(fakes: dict[str, FakeService]) -> dict[str, FakeService]:
    sales = fakes["sales"].answers
    sales["/api/v1/reports/pipeline"] = (200, PIPELINE)
    sales["/api/v1/reports/forecast"] = (200, FORECAST)
    sales["/api/v1/reports/win-rate"] = (200, WIN_RATE)
    fakes["support"].answers["/api/v1/reports/support"] = (200, SUPPORT)
    fakes["marketing"].answers["/api/v1/reports/marketing"] = (200, MARKETING)
    return fakes


@pytest.fixture
def gateway(tmp_path, services: dict[str, FakeService]) -> Iterator[Flask]:
    config = gateway_config(
        f"sqlite:///{tmp_path / 'gateway.db'}",
        service_urls=ServiceUrls(services),
        view_timeout_seconds=TIMEOUT,
    )
    app = create_app(config)
    yield app
    close_app(app)


def dashboard(app: Flask, query: str = "") -> Any:
    return app.test_client().get(f"/api/v1/dashboard{query}", headers=token_for(app))


def test_the_dashboard_has_every_headline_number(gateway, services):
    response = dashboard(gateway, "?from=2026-10-01&to=2026-10-31")

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["period"] == {"from": "2026-10-01", "to": "2026-10-31"}
    assert body["pipeline"] == {
        "pipeline_id": "p-1",
        "open_deals": 3,
        "value": eur("3000.00"),
        "weighted_value": eur("1200.0000"),
    }
    assert body["forecast"]["open_deals"] == 3
    assert body["forecast"]["value"] == [*eur("1250.50"), {"amount": "10.00", "currency": "USD"}]
    assert body["forecast"]["weighted_value"] == eur("600.25")
    assert body["win_rate"]["win_rate"] == "0.5000"
    assert body["tickets"]["open"] == 7
    assert body["tickets"]["sla_compliance"] == {"first_response": "0.9000", "resolution": "0.7500"}
    assert body["csat"] == {"count": 4, "average": "4.25"}
    assert body["campaigns"]["open_rate"] == "0.4000" and body["campaigns"]["sent"] == 2
    assert body["churn"]["rate"] == "0.0500"
    assert body["lifetime_value"]["average"] == eur("1500.00")
    assert body["unavailable"] == [] and body["forbidden"] == []


def test_the_period_reaches_each_service_in_its_own_spelling(gateway, services):
    dashboard(gateway, "?from=2026-10-01&to=2026-10-31")

    asked = {call["path"]: call["args"] for s in services.values() for call in s.calls}
    assert asked["/api/v1/reports/win-rate"] == {"from": "2026-10-01", "to": "2026-10-31"}
    assert asked["/api/v1/reports/support"] == {"from": "2026-10-01", "to": "2026-10-31"}
    # Marketing's periods leave `to` out: the day after keeps the 31st in.
    assert asked["/api/v1/reports/marketing"] == {"from": "2026-10-01", "to": "2026-11-01"}
    assert asked["/api/v1/reports/forecast"] == {}


def test_by_default_the_period_is_the_30_days_up_to_today(gateway, services):
    body = dashboard(gateway).get_json()

    today = utcnow().date()
    first = today - timedelta(days=29)
    assert body["period"] == {"from": first.isoformat(), "to": today.isoformat()}


def test_a_stopped_service_is_named_and_its_numbers_are_null(gateway, services):
    services["support"].stopped = True

    response = dashboard(gateway)

    assert response.status_code == 200
    body = response.get_json()
    assert body["unavailable"] == ["support"]
    assert body["tickets"] is None and body["csat"] is None
    assert body["pipeline"]["open_deals"] == 3 and body["churn"]["rate"] == "0.0500"


def test_a_slow_service_is_named_within_about_one_timeout(gateway, services):
    services["marketing"].delay = 3 * TIMEOUT

    started = time.monotonic()
    body = dashboard(gateway).get_json()
    elapsed = time.monotonic() - started

    assert body["unavailable"] == ["marketing"]
    assert body["campaigns"] is None and body["churn"] is None
    assert elapsed < 2.5 * TIMEOUT


def test_figures_a_service_does_not_give_are_null(gateway, services):
    services["marketing"].answers["/api/v1/reports/marketing"] = (200, {"open_rate": "0.3000"})

    body = dashboard(gateway).get_json()

    assert body["campaigns"]["open_rate"] == "0.3000"
    assert body["churn"]["rate"] is None and body["lifetime_value"]["average"] is None
    assert body["unavailable"] == []


def test_no_default_pipeline_is_an_empty_pipeline(gateway, services):
    del services["sales"].answers["/api/v1/reports/pipeline"]

    body = dashboard(gateway).get_json()

    assert body["pipeline"]["open_deals"] == 0 and body["pipeline"]["value"] == []


@pytest.mark.parametrize(
    "query, field",
    [
        ("?from=yesterday", "from"),
        ("?to=2026-02-30", "to"),
        ("?from=2026-10-02&to=2026-10-01", "to"),
        ("?from=2000-01-01&to=2026-01-01", "to"),
        ("?owner=me", "owner"),
    ],
)
def test_a_bad_period_is_422_before_any_service_is_asked(gateway, services, query, field):
    response = dashboard(gateway, query)

    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]
    assert all(service.calls == [] for service in services.values())
