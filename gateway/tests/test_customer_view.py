"""The unified customer view, against stand-in services on local ports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from gateway.app import create_app
from gateway.breaker import BREAKERS
from gateway.tests.conftest import close_app, gateway_config
from gateway.tests.fake_services import FakeService, ServiceUrls, page, token_for

# Generous: a loaded CI machine must not make a healthy stand-in look slow.
TIMEOUT = 2.0
CONTACT_ID = "6f1c2d3e-0000-4000-8000-000000000001"
COMPANY_ID = "6f1c2d3e-0000-4000-8000-00000000000c"
RESOLVED_TICKET = "6f1c2d3e-0000-4000-8000-0000000000a1"
OPEN_TICKET = "6f1c2d3e-0000-4000-8000-0000000000a2"
CAMPAIGN_ID = "6f1c2d3e-0000-4000-8000-0000000000c1"
CONTACT = {"id": CONTACT_ID, "email": "ada@example.com", "company_id": COMPANY_ID}
VIEW = f"/api/v1/customers/{CONTACT_ID}"


def _deals(args: dict[str, str]) -> tuple[int, Any]:
    return page({"id": f"deal-{args['status']}", "status": args["status"]})


def _messages(args: dict[str, str]) -> tuple[int, Any]:
    if args.get("category") == "marketing":
        opened = {"campaign_id": CAMPAIGN_ID, "status": "sent", "opened_at": "2026-11-02T10:00:00Z"}
        return page(opened, {"campaign_id": CAMPAIGN_ID, "status": "bounced"})
    return page({"id": "m-1", "subject": "Welcome"})


def the_complete_customer(services: dict[str, FakeService]) -> None:
    """Every service knows something about the contact."""
    contacts, sales, support = services["contacts"], services["sales"], services["support"]
    contacts.answers[f"/api/v1/contacts/{CONTACT_ID}"] = (200, CONTACT)
    contacts.answers[f"/api/v1/companies/{COMPANY_ID}"] = (200, {"id": COMPANY_ID, "name": "ACME"})
    contacts.answers[f"/api/v1/contacts/{CONTACT_ID}/interactions"] = page({"kind": "call"})
    sales.answers["/api/v1/deals"] = _deals
    sales.answers["/api/v1/leads"] = page({"id": "lead-1", "status": "working"})
    sales.answers["/api/v1/tasks"] = page({"id": "task-1", "done": False})
    tickets = [
        {"id": RESOLVED_TICKET, "status": "resolved", "sla_breached": False},
        {"id": OPEN_TICKET, "status": "open", "sla_breached": True},
    ]
    support.answers["/api/v1/tickets"] = page(*tickets)
    support.answers[f"/api/v1/tickets/{RESOLVED_TICKET}/csat"] = (200, {"rating": 4})
    subscription = {"list_name": "News", "status": "subscribed"}
    services["marketing"].answers["/api/v1/subscriptions"] = page(subscription)
    services["notifications"].answers["/api/v1/messages"] = _messages


@pytest.fixture
def services(fakes: dict[str, FakeService]) -> dict[str, FakeService]:
    the_complete_customer(fakes)
    return fakes


def make_gateway(tmp_path, services: dict[str, FakeService], **overrides: Any) -> Flask:
    config = gateway_config(
        f"sqlite:///{tmp_path / 'gateway.db'}",
        service_urls=ServiceUrls(services),
        view_timeout_seconds=TIMEOUT,
        **overrides,
    )
    return create_app(config)


@pytest.fixture
def gateway(tmp_path, services: dict[str, FakeService]) -> Iterator[Flask]:
    app = make_gateway(tmp_path, services)
    yield app
    close_app(app)


def view(app: Flask, role: str = "viewer", **headers: str) -> Any:
    return app.test_client().get(VIEW, headers={**token_for(app, role), **headers})


def test_the_view_shows_every_section_when_every_service_answers(gateway, services):
    response = view(gateway, **{"X-Request-ID": "req-view-1"})

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["contact"] == CONTACT
    assert body["company"]["name"] == "ACME"
    assert [d["id"] for d in body["deals"]["open"]] == ["deal-open"]
    assert [d["id"] for d in body["deals"]["won"]] == ["deal-won"]
    assert [lead["id"] for lead in body["leads"]] == ["lead-1"]
    assert [task["id"] for task in body["tasks"]] == ["task-1"]
    assert [t["sla_breached"] for t in body["tickets"]] == [False, True]
    assert body["csat"] == {"count": 1, "average": "4.00", "ratings": [{"rating": 4}]}
    assert body["subscriptions"][0]["status"] == "subscribed"
    engagement = body["campaign_engagement"]
    assert (engagement["campaigns"], engagement["emails"], engagement["opened"]) == (1, 2, 1)
    assert engagement["bounced"] == 1 and engagement["open_rate"] == "1.0000"
    assert body["messages"] == [{"id": "m-1", "subject": "Welcome"}]
    assert body["timeline"] == [{"kind": "call"}]
    assert body["unavailable"] == [] and body["forbidden"] == []


def test_the_services_are_asked_about_this_contact_as_the_caller(gateway, services):
    view(gateway, **{"X-Request-ID": "req-view-2"})

    sales_calls = {(c["path"], c["args"].get("status")): c for c in services["sales"].calls}
    assert sales_calls[("/api/v1/deals", "open")]["args"]["contact_id"] == CONTACT_ID
    leads = sales_calls[("/api/v1/leads", "new,working,qualified")]
    assert leads["args"]["email"] == "ada@example.com"
    assert services["support"].calls[0]["args"]["contact_id"] == CONTACT_ID
    # Only the resolved ticket can have a rating: the open one is not asked.
    assert f"/api/v1/tickets/{OPEN_TICKET}/csat" not in services["support"].paths()
    for service in services.values():
        for call in service.calls:
            assert call["headers"]["Authorization"].startswith("Bearer ")
            assert call["headers"]["X-Request-Id"] == "req-view-2"


def test_ratings_included_in_the_ticket_list_are_not_asked_for_one_by_one(gateway, services):
    rating = {"id": RESOLVED_TICKET, "ticket_id": RESOLVED_TICKET, "rating": 5}
    services["support"].answers["/api/v1/tickets"] = page(
        {"id": RESOLVED_TICKET, "status": "resolved", "sla_breached": False, "csat": rating},
        {"id": OPEN_TICKET, "status": "open", "sla_breached": True, "csat": None},
    )

    body = view(gateway).get_json()

    assert body["csat"] == {"count": 1, "average": "5.00", "ratings": [rating]}
    assert [call["path"] for call in services["support"].calls] == ["/api/v1/tickets"]
    assert services["support"].calls[0]["args"]["include"] == "csat"


def test_a_stopped_service_is_named_unavailable_and_the_rest_still_answers(gateway, services):
    services["support"].stopped = True

    response = view(gateway)

    assert response.status_code == 200
    body = response.get_json()
    assert body["unavailable"] == ["support"]
    assert body["tickets"] is None and body["csat"] is None
    assert body["deals"]["open"] and body["subscriptions"] and body["timeline"]


def test_a_slow_service_is_named_unavailable_within_about_one_timeout(gateway, services):
    services["sales"].delay = 3 * TIMEOUT

    started = time.monotonic()
    response = view(gateway)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    body = response.get_json()
    assert body["unavailable"] == ["sales"]
    assert body["deals"] is None and body["leads"] is None and body["tasks"] is None
    assert body["tickets"] and body["messages"]
    assert elapsed < 2.5 * TIMEOUT


def test_a_service_error_is_unavailable_without_its_details(gateway, services):
    services["marketing"].answers["/api/v1/subscriptions"] = (500, {"detail": "db-7.internal"})

    response = view(gateway)

    assert response.status_code == 200
    assert response.get_json()["unavailable"] == ["marketing"]
    assert "db-7.internal" not in response.get_data(as_text=True)


def test_a_section_the_role_may_not_read_is_left_out_and_named_forbidden(gateway, services):
    services["marketing"].answers["/api/v1/subscriptions"] = (403, {"title": "Forbidden"})

    body = view(gateway, role="support").get_json()

    assert "subscriptions" not in body
    assert body["forbidden"] == ["subscriptions"]
    assert body["unavailable"] == []


def test_an_unknown_contact_is_404(gateway, services):
    del services["contacts"].answers[f"/api/v1/contacts/{CONTACT_ID}"]

    response = view(gateway)

    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert CONTACT_ID in response.get_json()["detail"]


def test_an_id_that_is_no_uuid_is_404_without_asking_anyone(gateway, services):
    response = gateway.test_client().get("/api/v1/customers/nope", headers=token_for(gateway))

    assert response.status_code == 404
    assert all(service.calls == [] for service in services.values())


@pytest.mark.parametrize("failure", ["stopped", "slow"])
def test_without_the_contacts_service_there_is_no_view_503_naming_it(gateway, services, failure):
    if failure == "stopped":
        services["contacts"].stopped = True
    else:
        services["contacts"].delay = 3 * TIMEOUT

    started = time.monotonic()
    response = view(gateway)

    assert time.monotonic() - started < 2.5 * TIMEOUT
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"] == "The contacts service is unavailable"
    assert "127.0.0.1" not in response.get_data(as_text=True)


def test_the_view_needs_a_token(gateway, services):
    assert gateway.test_client().get(VIEW).status_code == 401
    assert all(service.calls == [] for service in services.values())


def test_an_open_circuit_leaves_the_service_out_without_calling_it(gateway, services):
    breaker = gateway.extensions[BREAKERS]["notifications"]
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()

    body = view(gateway).get_json()

    assert body["unavailable"] == ["notifications"]
    assert body["messages"] is None and body["campaign_engagement"] is None
    assert services["notifications"].calls == []


def test_a_service_that_keeps_failing_opens_its_circuit_for_the_view(tmp_path, services):
    app = make_gateway(tmp_path, services, breaker_failures=2, breaker_open_seconds=60)
    services["marketing"].answers["/api/v1/subscriptions"] = (503, {})
    try:
        for _ in range(2):
            assert view(app).get_json()["unavailable"] == ["marketing"]
        services["marketing"].calls.clear()
        assert view(app).get_json()["unavailable"] == ["marketing"]
    finally:
        close_app(app)

    assert services["marketing"].calls == []
