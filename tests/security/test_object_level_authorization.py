"""API1 (broken object-level authorization): a sales user never reaches another's records.

Through the running system: Ben's lead, deal and task are invisible to Ana (another sales
user without team visibility) by id, by list, by search, by batch read and in the customer
view, and every change she tries (update, delete, actions, batch update) answers 404 and
leaves Ben's record as it was.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.crm_run import eventually
from tests.security.conftest import Caller, System, assert_problem

pytestmark = pytest.mark.xdist_group("crm-run")

RENAME = {"leads": {"first_name": "Stolen"}, "deals": {"name": "Stolen"}, "tasks": {"title": "X"}}
# A search filter that finds Ben's record (for Ben).
SEARCH_FILTERS = {
    "leads": {"field": "company_name", "operator": "eq", "value": "Secret Co"},
    "deals": {"field": "name", "operator": "contains", "value": "secret"},
}
ACTIONS = {
    "leads": ["convert"],
    "deals": ["win", "lose", "reopen"],
    "tasks": ["complete", "reopen"],
}


def _ids(value: Any) -> list[str]:
    """Every `id` anywhere in a JSON value."""
    if isinstance(value, dict):
        return [value.get("id"), *(i for v in value.values() for i in _ids(v))]
    if isinstance(value, list):
        return [i for v in value for i in _ids(v)]
    return []


def made(answer: Any) -> dict[str, Any]:
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def customer(system: System, users: dict[str, Caller]) -> dict[str, Any]:
    body = {"first_name": "Cleo", "email": "cleo@customer.example"}
    return made(users["admin"].post(f"{system.api}/contacts", json=body))


@pytest.fixture(scope="module")
def bens(system: System, users: dict[str, Caller], customer: dict[str, Any]) -> dict[str, Any]:
    """A lead, a deal and a task of Ben's, the deal and task about the customer."""
    ben, api = users["sales_b"], system.api
    lead = {"first_name": "Cleo", "email": customer["email"], "company_name": "Secret Co"}
    deal = {"name": "Ben's secret deal", "contact_id": customer["id"], "amount": "9000.00"}
    task = {"title": "Ben calls Cleo", "contact_id": customer["id"]}
    return {
        "leads": made(ben.post(f"{api}/leads", json=lead)),
        "deals": made(ben.post(f"{api}/deals", json={**deal, "currency": "EUR"})),
        "tasks": made(ben.post(f"{api}/tasks", json=task)),
    }


@pytest.mark.parametrize("kind", ["leads", "deals", "tasks"])
def test_another_sales_users_record_is_not_found_by_id_and_cannot_be_changed(
    system, users, bens, kind
):
    ana, ben = users["sales"], users["sales_b"]
    theirs = bens[kind]
    url = f"{system.api}/{kind}/{theirs['id']}"

    assert_problem(ana.get(url), 404)
    assert_problem(ana.patch(url, json=RENAME[kind]), 404)
    assert_problem(ana.patch(url, json={"owner_id": ana.id}), 403, 404)
    for action in ACTIONS[kind]:
        body = {"reason": "Too expensive"} if action == "lose" else {}
        assert_problem(ana.post(f"{url}/{action}", json=body), 404)
    assert_problem(ana.delete(url), 404)

    after = ben.get(url)
    assert after.status_code == 200
    kept = after.json()
    assert kept["owner_id"] == ben.id and kept["version"] == theirs["version"]


@pytest.mark.parametrize("kind", ["leads", "deals", "tasks"])
def test_another_sales_users_record_is_in_no_list_search_or_batch_read(system, users, bens, kind):
    ana, ben = users["sales"], users["sales_b"]
    theirs = bens[kind]
    listed = ana.get(f"{system.api}/{kind}", params={"limit": 200})
    assert listed.status_code == 200
    assert theirs["id"] not in {item["id"] for item in listed.json()["items"]}
    if kind != "tasks":  # tasks have no search or batch endpoints
        matching = {"filters": [SEARCH_FILTERS[kind]]}
        searched = ana.post(f"{system.api}/{kind}/search", json={"filter_groups": [matching]})
        assert searched.status_code == 200 and searched.json()["items"] == [], searched.text
        assert ben.post(f"{system.api}/{kind}/search", json={"filter_groups": [matching]}).json()[
            "items"
        ], "the filter does find Ben's record for Ben"
        searched = ana.post(f"{system.api}/{kind}/search", json={"query": "Cleo"})
        assert searched.status_code == 200 and searched.json()["items"] == []
        read = ana.post(f"{system.api}/{kind}/batch/read", json={"ids": [theirs["id"]]})
        assert read.status_code == 207, read.text
        [result] = read.json()["results"]
        assert result["status"] == 404 and "item" not in result
        update = {"inputs": [{"id": theirs["id"], **RENAME[kind]}]}
        changed = ana.post(f"{system.api}/{kind}/batch/update", json=update)
        assert changed.status_code == 207 and changed.json()["results"][0]["status"] == 404
    assert ben.get(f"{system.api}/{kind}/{theirs['id']}").json()["version"] == theirs["version"]


def test_the_customer_view_shows_a_sales_user_only_their_own_deals_leads_and_tasks(
    system, users, bens, customer
):
    ana, ben = users["sales"], users["sales_b"]
    url = f"{system.api}/customers/{customer['id']}"
    seen_by_ben = eventually(  # the timeline learns of Ben's deal from its event
        lambda: ben.get(url), lambda answer: "Ben's secret deal" in answer.text
    )

    seen_by_ana = ana.get(url)

    assert seen_by_ana.status_code == 200 and seen_by_ben.status_code == 200
    assert seen_by_ana.json()["deals"] == {"open": [], "won": []}
    assert seen_by_ana.json()["leads"] == [] and seen_by_ana.json()["tasks"] == []
    assert not {bens[kind]["id"] for kind in bens} & set(_ids(seen_by_ana.json()))
    for secret in ("Ben's secret deal", "Secret Co", "9000", "Ben calls Cleo"):
        assert secret not in seen_by_ana.text, secret
    # The shared history still says that something happened, not what.
    assert "Deal created" in {e["subject"] for e in seen_by_ana.json()["timeline"]}
    assert [d["id"] for d in seen_by_ben.json()["deals"]["open"]] == [bens["deals"]["id"]]
    for path in ("interactions", "export"):
        direct = ana.get(f"{system.api}/contacts/{customer['id']}/{path}")
        assert direct.status_code == 200 and "Ben's secret deal" not in direct.text, path


def test_filters_and_sorting_do_not_leak_another_sales_users_records(system, users, bens):
    ana = users["sales"]
    by_owner = ana.get(f"{system.api}/deals", params={"owner_id": users["sales_b"].id})
    assert by_owner.status_code == 200 and by_owner.json()["items"] == []
    by_contact = ana.get(f"{system.api}/deals", params={"contact_id": bens["deals"]["contact_id"]})
    assert by_contact.status_code == 200 and by_contact.json()["items"] == []
    report = ana.get(f"{system.api}/reports/pipeline")
    assert report.status_code == 200 and "Ben's secret deal" not in report.text


def test_another_sales_users_task_reminder_is_neither_seen_nor_cancelled(system, users):
    ana, ben = users["sales"], users["sales_b"]
    task = {"title": "Ben's private call", "due_at": "2099-01-01T09:00:00Z"}
    task = made(ben.post(f"{system.api}/tasks", json=task))

    def bens_reminders() -> list:
        found = ben.get(f"{system.api}/reminders", params={"task_id": task["id"]})
        return found.json()["items"]

    [reminder] = eventually(bens_reminders, lambda found: len(found) == 1)
    url = f"{system.api}/reminders/{reminder['id']}"

    assert_problem(ana.get(url), 404)
    assert_problem(ana.delete(url), 404)
    listed = ana.get(f"{system.api}/reminders", params={"limit": 200}).json()["items"]
    assert reminder["id"] not in {r["id"] for r in listed}
    assert ben.get(url).json()["status"] == "scheduled"


def test_a_sales_user_cannot_hang_a_task_on_another_users_deal(system, users, bens):
    ana = users["sales"]
    body = {"title": "Piggyback", "deal_id": bens["deals"]["id"]}
    answer = ana.post(f"{system.api}/tasks", json=body)
    assert_problem(answer, 404, 422)


def test_an_idempotency_key_never_replays_another_users_answer(system, users):
    ana, ben = users["sales"], users["sales_b"]
    key = {"Idempotency-Key": "shared-key-1"}
    bens_deal = made(ben.post(f"{system.api}/deals", json={"name": "Ben's keyed"}, headers=key))

    anas = ana.post(f"{system.api}/deals", json={"name": "Ben's keyed"}, headers=key)

    assert anas.status_code == 201 and "Idempotent-Replayed" not in anas.headers
    assert anas.json()["id"] != bens_deal["id"] and anas.json()["owner_id"] == ana.id


def test_an_internal_ticket_note_reaches_support_and_admins_only(system, users):
    support, admin, api = users["support"], users["admin"], system.api
    secret = f"Internal {uuid.uuid4().hex}"
    person = {"first_name": "Noa", "email": f"noa-{uuid.uuid4().hex[:6]}@customer.example"}
    contact = made(admin.post(f"{api}/contacts", json=person))
    ticket = made(
        support.post(f"{api}/tickets", json={"subject": "Jam", "contact_id": contact["id"]})
    )
    comments = f"{api}/tickets/{ticket['id']}/comments"
    reply = made(support.post(comments, json={"body": "We are on it."}))
    note = made(support.post(comments, json={"body": secret, "public": False}))
    # Resolving after the note: once the timeline shows it, contacts and the view have
    # had every event of the ticket before it, the note's included.
    assert support.patch(f"{api}/tickets/{ticket['id']}", json={"status": "resolved"}).ok
    timeline = f"{api}/contacts/{contact['id']}/interactions"
    eventually(
        lambda: admin.get(timeline).json()["items"],
        lambda items: any(i.get("event_type") == "ticket.resolved" for i in items),
        what="the resolved ticket on the timeline",
    )

    for role in ("sales", "marketing", "viewer"):
        caller = users[role]
        assert_problem(caller.get(f"{comments}/{note['id']}"), 404)
        listed = caller.get(comments).json()["items"]
        assert [c["id"] for c in listed] == [reply["id"]], role
        for url in (
            f"{comments}?public=false",
            f"{api}/tickets?q={secret.split()[1]}",
            f"{api}/tickets/{ticket['id']}",
            timeline,
            f"{api}/customers/{contact['id']}",
        ):
            answer = caller.get(url)
            assert answer.status_code == 200 and secret not in answer.text, (role, url)
        search = {"query": secret.split()[1], "filter_groups": []}
        assert caller.post(f"{api}/tickets/search", json=search).json()["items"] == []
    for reader in (support, admin):
        assert [c["id"] for c in reader.get(comments).json()["items"]] == [reply["id"], note["id"]]
        assert reader.get(f"{comments}/{note['id']}").json()["body"] == secret
