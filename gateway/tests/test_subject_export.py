"""The subject access export (gateway/subject_export.py), against stand-in services."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from gateway.app import create_app
from gateway.tests.conftest import close_app, gateway_config
from gateway.tests.fake_services import FakeService, ServiceUrls, token_for

CONTACT_ID = "6f1c2d3e-0000-4000-8000-0000000000b1"
SURVIVOR_ID = "6f1c2d3e-0000-4000-8000-0000000000b2"
EMAIL = "ada@example.com"
EXPORT = f"/api/v1/customers/{CONTACT_ID}/export"
BASE = "/api/v1/subject-exports"
TASKS = [f"6f1c2d3e-0000-4000-8000-{n:012d}" for n in range(120)]


def reminders(args: dict[str, str]) -> tuple[int, Any]:
    rows = [{"task_id": task_id} for task_id in args["task_ids"].split(",")]
    return 200, {"service": "notifications", "reminders": rows}


def every_service_knows_the_person(services: dict[str, FakeService], person: str) -> None:
    contact = {"id": person, "email": EMAIL}
    exports = {
        "contacts": {"contact": contact, "notes": [{"body": "Prefers calls"}]},
        "sales": {"leads": [], "deals": [{"id": "deal-1"}], "tasks": [{"id": t} for t in TASKS]},
        "support": {"tickets": [{"id": "ticket-1", "comments": []}], "csat": []},
        "marketing": {"subscriptions": [{"list": "News"}], "consent_ledger": []},
        "notifications": {"messages": [{"id": "m-1"}], "webhook_deliveries": []},
    }
    for name, body in exports.items():
        services[name].answers[f"{BASE}/{name}/{person}"] = (200, {"service": name, **body})
    services["contacts"].answers[f"{BASE}/contacts/{CONTACT_ID}"] = (
        200,
        {"service": "contacts", **exports["contacts"]},
    )
    services["notifications"].answers[f"{BASE}/notifications/{person}/reminders"] = reminders


@pytest.fixture
def services(fakes: dict[str, FakeService]) -> dict[str, FakeService]:
    every_service_knows_the_person(fakes, CONTACT_ID)
    return fakes


@pytest.fixture
def gateway(tmp_path, services: dict[str, FakeService]) -> Iterator[Flask]:
    config = gateway_config(
        f"sqlite:///{tmp_path / 'gateway.db'}",
        service_urls=ServiceUrls(services),
        view_timeout_seconds=0.5,  # the export has its own, longer time
    )
    app = create_app(config)
    yield app
    close_app(app)


def export(app: Flask, role: str = "admin", path: str = EXPORT) -> Any:
    return app.test_client().get(path, headers=token_for(app, role))


def test_the_document_holds_every_services_export_as_an_attachment(gateway, services):
    response = export(gateway)

    assert response.status_code == 200, response.get_json()
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert "no-store" in response.headers["Cache-Control"]
    body = response.get_json()
    assert body["contact_id"] == CONTACT_ID and body["exported_at"].endswith("Z")
    assert body["contacts"]["notes"] == [{"body": "Prefers calls"}]
    assert body["sales"]["deals"] == [{"id": "deal-1"}]
    assert body["support"]["tickets"][0]["id"] == "ticket-1"
    assert body["marketing"]["subscriptions"] == [{"list": "News"}]
    assert body["notifications"]["messages"] == [{"id": "m-1"}]
    assert [row["task_id"] for row in body["notifications"]["reminders"]] == TASKS
    assert body["unavailable"] == []


def test_every_service_is_asked_about_the_person_and_their_email(gateway, services):
    export(gateway)

    for name in ("sales", "support", "marketing", "notifications"):
        exports = [c for c in services[name].calls if c["path"] == f"{BASE}/{name}/{CONTACT_ID}"]
        assert [call["args"] for call in exports] == [{"email": EMAIL}], name
    asked = [c for c in services["notifications"].calls if c["path"].endswith("/reminders")]
    assert len(asked) == 3  # 120 task ids, 50 a call
    assert sorted(i for c in asked for i in c["args"]["task_ids"].split(",")) == TASKS


@pytest.mark.parametrize("name", ["sales", "support", "marketing", "notifications"])
def test_a_service_that_does_not_answer_is_named_and_the_rest_is_there(gateway, services, name):
    services[name].stopped = True

    response = export(gateway)

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["unavailable"] == [name]
    assert body[name] is None
    assert all(body[other] is not None for other in services if other != name)


def test_a_service_without_the_export_route_is_unavailable_not_empty(gateway, services):
    del services["marketing"].answers[f"{BASE}/marketing/{CONTACT_ID}"]  # it answers 404

    body = export(gateway).get_json()

    assert body["unavailable"] == ["marketing"] and body["marketing"] is None


def test_without_sales_the_reminders_are_unknown_and_sales_is_named(gateway, services):
    services["sales"].stopped = True

    body = export(gateway).get_json()

    assert body["unavailable"] == ["sales"]
    assert body["notifications"]["messages"] == [{"id": "m-1"}]
    assert body["notifications"]["reminders"] is None


def test_reminders_that_did_not_come_name_notifications(gateway, services):
    path = f"{BASE}/notifications/{CONTACT_ID}/reminders"
    services["notifications"].answers[path] = (500, {"title": "Internal Server Error"})

    body = export(gateway).get_json()

    assert body["unavailable"] == ["notifications"]
    assert body["notifications"]["reminders"] is None


def test_without_the_contacts_service_there_is_no_export(gateway, services):
    services["contacts"].stopped = True

    response = export(gateway)

    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert "contacts" in response.get_json()["detail"]
    assert all(service.calls == [] for service in services.values())


def test_a_person_contacts_does_not_know_is_a_404(gateway, services):
    services["contacts"].answers.clear()

    response = export(gateway)

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


def test_a_merged_away_id_is_exported_under_the_id_the_person_lives_under(gateway, services):
    every_service_knows_the_person(services, SURVIVOR_ID)
    answer = services["contacts"].answers[f"{BASE}/contacts/{SURVIVOR_ID}"]
    services["contacts"].answers[f"{BASE}/contacts/{CONTACT_ID}"] = answer

    body = export(gateway).get_json()

    assert body["contact_id"] == SURVIVOR_ID and body["unavailable"] == []
    assert services["sales"].paths() == [f"{BASE}/sales/{SURVIVOR_ID}"]


def test_a_malformed_id_is_a_400(gateway, services):
    response = export(gateway, path="/api/v1/customers/not-an-id/export")

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("role", ["sales", "support", "marketing", "viewer"])
def test_only_an_admin_may_export_and_no_service_is_asked_otherwise(gateway, services, role):
    response = export(gateway, role)

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
    assert all(service.calls == [] for service in services.values())
