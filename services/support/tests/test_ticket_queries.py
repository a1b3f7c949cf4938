"""Finding tickets: list filters, free text, tags, sorting by urgency and due dates, search,
and the batch endpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.support.tests.conftest import AGENT_ID
from services.support.tests.ticket_helpers import (
    BASE,
    CONTACT,
    UNKNOWN,
    assert_problem,
    new_ticket,
    set_columns,
    snapshot,
    ticket_in,
)


def test_listing_filters_tickets(client, db):
    a = new_ticket(client, subject="Printer jam", tags=["hardware"], channel="email")
    b = new_ticket(client, subject="Refund", priority="urgent", assignee_id=AGENT_ID)
    c = new_ticket(client, requester={"email": "zed@shop.io"}, subject="Login", tags=["vip"])
    client.patch(f"{BASE}/{c['id']}", json={"status": "pending", "description": "Cannot sign in"})
    set_columns(db, b["id"], sla_breached=True)

    def subjects(query: str) -> list[str]:
        response = client.get(f"{BASE}?{query}")
        assert response.status_code == 200, response.get_json()
        return sorted(t["subject"] for t in response.get_json()["items"])

    assert subjects("status=new") == ["Printer jam"]
    assert subjects("status=open,pending") == ["Login", "Refund"]
    assert subjects("priority=urgent") == ["Refund"]
    assert subjects(f"assignee_id={AGENT_ID}") == ["Refund"]
    assert subjects("assignee_id=none") == ["Login", "Printer jam"]
    assert subjects(f"contact_id={CONTACT}") == ["Printer jam", "Refund"]
    assert subjects("channel=email") == ["Printer jam"]
    assert subjects("tag=HARDWARE") == ["Printer jam"] and subjects("tag=hard") == []
    assert subjects("breached=true") == ["Refund"]
    assert subjects("breached=false") == ["Login", "Printer jam"]
    assert subjects("q=SIGN%20cannot") == ["Login"]
    assert subjects("q=zed@shop") == ["Login"] and subjects("q=jam%20refund") == []
    assert a["id"] in {t["id"] for t in client.get(f"{BASE}?q=printer").get_json()["items"]}


def test_listing_sorts_and_pages_through_every_ticket_once(client, db):
    priorities = ["high", "low", "urgent", "normal", "low", "urgent", "normal"]
    now = datetime.now(UTC)
    for index, priority in enumerate(priorities):
        ticket = new_ticket(client, subject=f"T{index}", priority=priority)
        if index % 3:
            due = now + timedelta(hours=index)
            set_columns(db, ticket["id"], resolution_due_at=due, first_response_due_at=due)
    rank = {"low": 0, "normal": 1, "high": 2, "urgent": 3}
    for sort in ("priority", "-priority", "resolution_due_at", "-first_response_due_at"):
        seen, cursor = [], None
        while True:
            url = f"{BASE}?limit=3&sort={sort}" + (f"&cursor={cursor}" if cursor else "")
            page = client.get(url).get_json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len({t["id"] for t in seen}) == 7, sort
        field = sort.lstrip("-")
        keys = [rank[t[field]] if field == "priority" else t[field] or "9999" for t in seen]
        assert keys == sorted(keys, reverse=sort.startswith("-")), sort
    newest = client.get(f"{BASE}?sort=-updated_at&limit=1").get_json()["items"][0]
    assert newest["subject"] == "T6"


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=500",
        "status=maybe",
        "status=open,",
        "priority=asap",
        "channel=fax",
        "assignee_id=bob",
        "contact_id=nope",
        "tag=a%20b",
        "breached=perhaps",
        "colour=red",
        "sort=subject",
        "cursor=garbage",
        "status=open&status=new",
        "q=" + "x" * 201,
        "q=a%00b",
    ],
)
def test_bad_list_parameters_are_422(client, query):
    assert_problem(client.get(f"{BASE}?{query}"), 422)


def test_search_ors_groups_ands_filters_and_ranks_priorities(client):
    new_ticket(client, subject="Low one", priority="low", tags=["billing"])
    new_ticket(client, subject="High one", priority="high", channel="chat")
    new_ticket(client, subject="Urgent one", priority="urgent", tags=["billing", "vip"])
    body = {
        "filter_groups": [
            {
                "filters": [
                    {"field": "priority", "operator": "gte", "value": "high"},
                    {"field": "tags", "operator": "eq", "value": "vip"},
                ]
            },
            {"filters": [{"field": "channel", "operator": "in", "value": ["chat"]}]},
        ],
        "sort": "-priority",
    }
    response = client.post(f"{BASE}/search", json=body)
    assert response.status_code == 200
    assert [t["subject"] for t in response.get_json()["items"]] == ["Urgent one", "High one"]
    lacking = {
        "filter_groups": [{"filters": [{"field": "tags", "operator": "neq", "value": "vip"}]}]
    }
    assert len(client.post(f"{BASE}/search", json=lacking).get_json()["items"]) == 2
    query = client.post(f"{BASE}/search", json={"query": "urgent"}).get_json()
    assert [t["subject"] for t in query["items"]] == ["Urgent one"]


@pytest.mark.parametrize(
    "filters",
    [
        [{"field": "password", "operator": "eq", "value": "x"}],
        [{"field": "priority", "operator": "gt", "value": "soon"}],
        [{"field": "tags", "operator": "gt", "value": "vip"}],
        [{"field": "tags", "operator": "eq", "value": "a b"}],
        [{"field": "created_at", "operator": "gt", "value": "yesterday"}],
        [{"field": "sla_breached", "operator": "eq", "value": "yes"}],
        [{"field": "status", "operator": "like", "value": "open"}],
        [{"field": "subject", "operator": "eq", "value": "a\u0000"}],
    ],
)
def test_search_refuses_bad_filters_with_422(client, filters):
    response = client.post(f"{BASE}/search", json={"filter_groups": [{"filters": filters}]})
    assert_problem(response, 422)


def test_batch_create_update_and_read_answer_per_input(client, db):
    inputs = [
        {"subject": "Ok", "contact_id": CONTACT},
        {"subject": "No one"},
        {"subject": "Odd", "contact_id": CONTACT, "channel": "fax"},
    ]
    response = client.post(f"{BASE}/batch/create", json={"inputs": inputs})
    assert response.status_code == 207
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == [201, 422, 422]
    first = results[0]["item"]
    closed = ticket_in(client, "closed")
    updates = [
        {"id": first["id"], "status": "resolved"},
        {"id": UNKNOWN, "subject": "X"},
        {"subject": "no id"},
        {"id": closed["id"], "subject": "Late"},
    ]
    response = client.post(f"{BASE}/batch/update", json={"inputs": updates})
    assert [r["status"] for r in response.get_json()["results"]] == [200, 404, 422, 409]
    read = client.post(f"{BASE}/batch/read", json={"ids": [first["id"], UNKNOWN]})
    assert read.status_code == 207
    assert read.get_json()["results"][0]["item"]["status"] == "resolved"
    before = snapshot(db)
    assert_problem(client.post(f"{BASE}/batch/read", json={"ids": ["nope"]}), 422)
    assert_problem(client.post(f"{BASE}/batch/create", json={"inputs": []}), 422)
    assert_problem(client.post(f"{BASE}/batch/create", json={"inputs": [{}] * 101}), 422)
    assert snapshot(db) == before
