"""The subject access export through the running system: what every service holds on one
person in one document for an admin, and nothing for any other role, at the gateway or at
a service reached directly."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.crm_run import eventually
from tests.security.conftest import Caller, System, assert_problem, forwarded

pytestmark = pytest.mark.xdist_group("crm-run")

SERVICES = ("contacts", "sales", "support", "marketing", "notifications")
ROLES_BELOW_ADMIN = ("sales", "support", "marketing", "viewer")
EXPORT_TIMEOUT = 60


def made(answer: requests.Response) -> dict[str, Any]:
    assert answer.status_code in (201, 202), answer.text[:500]
    return answer.json()


@pytest.fixture(scope="module")
def person(system: System, users: dict[str, Caller]) -> dict[str, Any]:
    """A person every service holds something on, made by the admin through the gateway."""
    admin, api = users["admin"], system.api
    contact = made(
        admin.post(f"{api}/contacts", json={"first_name": "Noor", "email": "noor@sar.example"})
    )
    contact_id = contact["id"]
    note = {"body": "Asked for a copy of her data"}
    made(admin.post(f"{api}/contacts/{contact_id}/notes", json=note))
    deal = made(admin.post(f"{api}/deals", json={"name": "Noor's plan", "contact_id": contact_id}))
    task = {"title": "Call Noor", "contact_id": contact_id, "due_at": "2099-01-01T09:00:00Z"}
    task = made(admin.post(f"{api}/tasks", json=task))
    ticket = made(
        admin.post(f"{api}/tickets", json={"contact_id": contact_id, "subject": "My data"})
    )
    internal = {"body": "Check her identity first", "public": False}
    made(admin.post(f"{api}/tickets/{ticket['id']}/comments", json=internal))
    consent = {"contact_id": contact_id, "status": "subscribed"}
    eventually(  # marketing learns of the contact from contact.created
        lambda: admin.post(f"{api}/subscriptions", json=consent),
        lambda answer: answer.status_code == 201,
        what="a subscription",
    )
    email = {"to": contact["email"], "subject": "Your data", "body_text": "Attached."}
    made(admin.post(f"{api}/messages", json={**email, "contact_id": contact_id}))
    return {"contact": contact, "deal": deal, "task": task, "ticket": ticket, "note": note}


def test_the_export_holds_what_every_service_has_on_the_person(
    system: System, users: dict[str, Caller], person: dict[str, Any]
):
    contact_id = person["contact"]["id"]
    url = f"{system.api}/customers/{contact_id}/export"

    def complete(answer: requests.Response) -> bool:
        body = answer.json() if answer.status_code == 200 else {}
        return bool((body.get("notifications") or {}).get("reminders"))

    # The task's reminder reaches notifications through task.created.
    answer = eventually(
        lambda: users["admin"].get(url, timeout=EXPORT_TIMEOUT), complete, what="the reminder"
    )

    assert answer.headers["Content-Disposition"].startswith("attachment")
    document = answer.json()
    assert document["unavailable"] == [] and document["contact_id"] == contact_id
    assert document["exported_at"].endswith("Z")
    assert document["contacts"]["contact"]["email"] == "noor@sar.example"
    assert [n["body"] for n in document["contacts"]["notes"]] == [person["note"]["body"]]
    assert [d["id"] for d in document["sales"]["deals"]] == [person["deal"]["id"]]
    assert [t["id"] for t in document["sales"]["tasks"]] == [person["task"]["id"]]
    [ticket] = document["support"]["tickets"]
    assert ticket["id"] == person["ticket"]["id"]
    assert [(c["body"], c["visibility"]) for c in ticket["comments"]] == [
        ("Check her identity first", "internal")
    ]
    assert document["marketing"]["contact"]["email"] == "noor@sar.example"
    assert [s["status"] for s in document["marketing"]["subscriptions"]] == ["subscribed"]
    assert any(line["contact_id"] == contact_id for line in document["marketing"]["consent_ledger"])
    # (The ticket's acknowledgement may be there too.)
    assert "Your data" in [m["subject"] for m in document["notifications"]["messages"]]
    reminders = document["notifications"]["reminders"]
    assert [r["task_id"] for r in reminders] == [person["task"]["id"]]


@pytest.mark.parametrize("role", ROLES_BELOW_ADMIN)
def test_no_role_below_admin_gets_any_part_of_the_export(
    system: System, users: dict[str, Caller], person: dict[str, Any], role: str
):
    caller, contact_id = users[role], person["contact"]["id"]

    assert_problem(caller.get(f"{system.api}/customers/{contact_id}/export"), 403)
    for service in SERVICES:
        path = f"/api/v1/subject-exports/{service}/{contact_id}"
        assert_problem(caller.get(f"{system.base}{path}"), 403)
        # Around the gateway, with what the gateway would forward for the caller: the
        # service's own check refuses too.
        direct = f"http://127.0.0.1:{system.ports[service]}{path}"
        refused = requests.get(direct, headers=forwarded(caller), timeout=10)
        assert_problem(refused, 403)
        assert "noor" not in refused.text.lower()
