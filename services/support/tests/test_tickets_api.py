"""The tickets HTTP API: create, change, status flow, assignment, delete, roles, SLA wiring."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from services.support import sla
from services.support.csat import ticket_id_of
from services.support.tests.conftest import AGENT_ID, row_counts
from services.support.tests.ticket_helpers import (
    BASE,
    CONTACT,
    UNKNOWN,
    assert_problem,
    bearer,
    new_ticket,
    outbox_events,
    snapshot,
    ticket_in,
)

TABLES = ("tickets", "comments", "outbox")
OTHER_AGENT = "00000000-0000-4000-8000-000000000004"


@pytest.fixture
def refreshes(monkeypatch) -> list[tuple[str, str | None]]:
    """Every call of sla.refresh: (the ticket's status then, previous_status)."""
    calls: list[tuple[str, str | None]] = []

    def record(session, ticket, now, previous_status=None) -> None:
        calls.append((ticket.status, previous_status))

    monkeypatch.setattr(sla, "refresh", record)
    return calls


def test_creating_a_ticket_for_a_contact_answers_201_and_records_an_event(client, db):
    response = client.post(
        BASE,
        json={"subject": " Printer on fire ", "contact_id": CONTACT, "tags": ["VIP", "vip"]},
        headers={"X-Request-ID": "req-ticket-1"},
    )
    assert response.status_code == 201
    ticket = response.get_json()
    assert response.headers["Location"] == f"{BASE}/{ticket['id']}"
    assert response.headers["ETag"] == '"1"'
    assert ticket["subject"] == "Printer on fire" and ticket["contact_id"] == CONTACT
    assert (ticket["status"], ticket["priority"], ticket["channel"]) == ("new", "normal", "web")
    assert ticket["tags"] == ["vip"] and ticket["assignee_id"] is None
    assert ticket["sla"]["paused"] is False and ticket["sla_breached"] is False
    assert ticket["created_at"].endswith("Z") and ticket["reopened_count"] == 0
    [event] = outbox_events(db, "ticket.created")
    assert event["aggregate_id"] == ticket["id"] and event["aggregate_version"] == 1
    assert event["correlation_id"] == "req-ticket-1"
    assert (
        event["data"]["ticket_id"] == ticket["id"] and event["data"]["subject"] == ticket["subject"]
    )
    assert "requester" not in event["data"]
    assert client.get(f"{BASE}/{ticket['id']}").get_json() == ticket


def test_a_ticket_from_a_new_requester_names_the_contact_to_create(client, db):
    ticket = new_ticket(client, requester={"email": "ann@example.com", "name": "Ann Lee"})
    assert uuid.UUID(ticket["contact_id"])
    assert ticket["requester_email"] == "ann@example.com" and ticket["requester_name"] == "Ann Lee"
    [event] = outbox_events(db, "ticket.created")
    assert event["data"]["contact_id"] == ticket["contact_id"]
    assert event["data"]["requester"] == {"email": "ann@example.com", "name": "Ann Lee"}


def test_a_ticket_created_with_an_assignee_starts_open_and_records_the_assignment(client, db):
    ticket = new_ticket(client, assignee_id=AGENT_ID, priority="urgent", channel="phone")
    assert ticket["status"] == "open" and ticket["assignee_id"] == AGENT_ID
    [event] = outbox_events(db, "ticket.assigned")
    assert (
        event["data"]["assignee_id"] == AGENT_ID and event["data"]["previous_assignee_id"] is None
    )


def test_creating_starts_the_sla_clocks(client, refreshes):
    new_ticket(client)
    assert refreshes == [("new", None)]


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ("{nope", 400, None),
        ('"ticket"', 400, None),
        ("{}", 422, "contact_id"),
        ('{"contact_id": "' + CONTACT + '"}', 422, "subject"),
        ('{"subject": "Hi"}', 422, "contact_id"),
        ('{"subject": "  ", "contact_id": "' + CONTACT + '"}', 422, "subject"),
        ('{"subject": "Hi", "contact_id": "nope"}', 422, "contact_id"),
        ('{"subject": "Hi", "requester": {"name": "Ann"}}', 422, "requester"),
        ('{"subject": "Hi", "requester": {"email": "not-an-email"}}', 422, "requester"),
        ('{"subject": "Hi", "requester": {"email": "a@b.io", "age": 3}}', 422, "requester"),
        (
            '{"subject": "Hi", "requester": {"email": "a@b.io"}, "contact_id": "' + CONTACT + '"}',
            422,
            "requester",
        ),
        ('{"subject": "Hi", "contact_id": "' + CONTACT + '", "channel": "fax"}', 422, "channel"),
        ('{"subject": "Hi", "contact_id": "' + CONTACT + '", "priority": "asap"}', 422, "priority"),
        ('{"subject": "Hi", "contact_id": "' + CONTACT + '", "status": "open"}', 422, "status"),
        ('{"subject": "Hi", "contact_id": "' + CONTACT + '", "version": 3}', 422, "version"),
        ('{"subject": "Hi", "contact_id": "' + CONTACT + '", "tags": ["a b"]}', 422, "tags"),
        ('{"subject": "Hi", "contact_id": "' + CONTACT + '", "tags": "vip"}', 422, "tags"),
        ('{"subject": "Hi\\u0000", "contact_id": "' + CONTACT + '"}', 422, "subject"),
        (
            '{"subject": "Hi", "contact_id": "' + CONTACT + '", "assignee_id": 7}',
            422,
            "assignee_id",
        ),
        ('{"subject": "' + "x" * 301 + '", "contact_id": "' + CONTACT + '"}', 422, "subject"),
    ],
)
def test_bad_ticket_input_is_refused_and_changes_nothing(client, db, payload, status, field):
    before = row_counts(db, *TABLES)
    response = client.post(BASE, data=payload, content_type="application/json")
    body = assert_problem(response, status)
    if field:
        assert field in body["errors"]
    assert row_counts(db, *TABLES) == before


def test_limits_on_tags_and_description_are_422(client, db):
    before = row_counts(db, *TABLES)
    many = [f"t{i}" for i in range(21)]
    assert_problem(
        client.post(BASE, json={"subject": "S", "contact_id": CONTACT, "tags": many}), 422
    )
    huge = {"subject": "S", "contact_id": CONTACT, "description": "x" * 100_001}
    assert_problem(client.post(BASE, json=huge), 422)
    assert row_counts(db, *TABLES) == before


def test_a_ticket_id_given_twice_is_409(client, db):
    ticket_id = str(uuid.uuid4())
    new_ticket(client, id=ticket_id)
    before = snapshot(db)
    payload = {"id": ticket_id, "subject": "Again", "contact_id": CONTACT}
    assert_problem(client.post(BASE, json=payload), 409)
    assert snapshot(db) == before


def test_an_idempotency_key_returns_the_first_answer_not_a_second_ticket(client, db):
    headers = {"Idempotency-Key": "ticket-1"}
    payload = {"subject": "Once", "contact_id": CONTACT}
    first = client.post(BASE, json=payload, headers=headers)
    again = client.post(BASE, json=payload, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.get_json() == again.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert row_counts(db, "tickets")["tickets"] == 1


def test_unknown_tickets_are_404(client):
    assert_problem(client.get(f"{BASE}/{UNKNOWN}"), 404)
    assert_problem(client.get(f"{BASE}/not-a-uuid"), 404)
    assert_problem(client.patch(f"{BASE}/{UNKNOWN}", json={"subject": "X"}), 404)
    assert_problem(client.delete(f"{BASE}/{UNKNOWN}"), 404)
    assert_problem(client.post(f"{BASE}/{UNKNOWN}/assign", json={"assignee_id": None}), 404)


def test_patch_changes_given_fields_as_one_new_version(client, db, refreshes):
    ticket = new_ticket(client, description="First")
    url = f"{BASE}/{ticket['id']}"
    response = client.patch(
        url, json={"subject": "Renamed", "tags": ["billing"]}, headers={"If-Match": '"1"'}
    )
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    body = response.get_json()
    assert body["subject"] == "Renamed" and body["tags"] == ["billing"]
    assert body["description"] == "First" and body["updated_at"] > ticket["updated_at"]
    [event] = outbox_events(db, "ticket.updated")
    assert sorted(event["data"]["changed"]) == ["subject", "tags"]
    assert event["aggregate_version"] == 2
    assert refreshes == [("new", None)]  # no clock moves for a subject
    same = client.patch(url, json={"subject": "Renamed", "description": "First"})
    assert same.get_json()["version"] == 2 and len(outbox_events(db, "ticket.updated")) == 1
    assert client.patch(url, json={"priority": "urgent"}).get_json()["priority"] == "urgent"
    assert refreshes[-1] == ("new", "new")


def test_a_stale_if_match_is_409_and_changes_nothing(client, db):
    ticket = new_ticket(client)
    url = f"{BASE}/{ticket['id']}"
    client.patch(url, json={"subject": "Two"})
    before = snapshot(db)
    stale = {"If-Match": '"1"'}
    assert_problem(client.patch(url, json={"subject": "Late"}, headers=stale), 409)
    assert_problem(client.post(f"{url}/assign", json={"assignee_id": AGENT_ID}, headers=stale), 409)
    assert_problem(client.delete(url, headers=stale), 409)
    assert_problem(client.patch(url, json={"subject": "X"}, headers={"If-Match": "soon"}), 400)
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"id": UNKNOWN}, "id"),
        ({"contact_id": CONTACT}, "contact_id"),
        ({"subject": None}, "subject"),
        ({"subject": ""}, "subject"),
        ({"status": "archived"}, "status"),
        ({"status": None}, "status"),
        ({"priority": None}, "priority"),
        ({"tags": [""]}, "tags"),
        ({"assignee_id": "someone"}, "assignee_id"),
        ({"sla_breached": True}, "sla_breached"),
    ],
)
def test_bad_patches_are_422_and_change_nothing(client, db, payload, field):
    ticket = new_ticket(client)
    before = snapshot(db)
    body = assert_problem(client.patch(f"{BASE}/{ticket['id']}", json=payload), 422)
    assert field in body["errors"]
    assert snapshot(db) == before


ALLOWED = {
    ("new", "open"),
    ("new", "pending"),
    ("new", "resolved"),
    ("open", "pending"),
    ("open", "resolved"),
    ("pending", "open"),
    ("pending", "resolved"),
    ("resolved", "closed"),
    ("resolved", "open"),
}
STATUSES = ("new", "open", "pending", "resolved", "closed")


@pytest.mark.parametrize("source", STATUSES)
def test_a_ticket_moves_only_along_the_status_flow(client, db, source):
    for target in STATUSES:
        if target == source:
            continue
        ticket = ticket_in(client, source)
        before = snapshot(db)
        response = client.patch(f"{BASE}/{ticket['id']}", json={"status": target})
        if (source, target) in ALLOWED:
            assert response.status_code == 200, (source, target)
            assert response.get_json()["status"] == target
        else:
            body = assert_problem(response, 409)
            assert source in body["detail"], (source, target)
            assert snapshot(db) == before


def test_every_status_move_refreshes_the_sla_with_the_previous_status(client, refreshes):
    ticket = new_ticket(client)
    for target in ("pending", "open", "resolved", "open"):
        client.patch(f"{BASE}/{ticket['id']}", json={"status": target})
    assert refreshes == [
        ("new", None),
        ("pending", "new"),
        ("open", "pending"),
        ("resolved", "open"),
        ("open", "resolved"),
    ]


def test_resolving_records_resolved_with_a_csat_token_and_closing_sets_closed_at(app, client, db):
    ticket = new_ticket(client)
    url = f"{BASE}/{ticket['id']}"
    resolved = client.patch(url, json={"status": "resolved"}).get_json()
    assert resolved["resolved_at"].endswith("Z") and resolved["closed_at"] is None
    [moved] = outbox_events(db, "ticket.status_changed")
    assert (moved["data"]["from"], moved["data"]["to"]) == ("new", "resolved")
    [event] = outbox_events(db, "ticket.resolved")
    settings = app.extensions["crm.settings"]
    assert ticket_id_of(settings, event["data"]["csat_token"]) == ticket["id"]
    assert event["aggregate_version"] == moved["aggregate_version"] == 2
    closed = client.patch(url, json={"status": "closed"}).get_json()
    assert closed["status"] == "closed" and closed["closed_at"].endswith("Z")
    assert closed["resolved_at"] == resolved["resolved_at"]


def test_reopening_a_resolved_ticket_counts_and_clears_the_resolution(client, db):
    ticket = ticket_in(client, "resolved")
    body = client.patch(f"{BASE}/{ticket['id']}", json={"status": "open"}).get_json()
    assert body["status"] == "open" and body["reopened_count"] == 1 and body["resolved_at"] is None
    [event] = outbox_events(db, "ticket.reopened")
    assert event["data"]["reopened_count"] == 1 and event["aggregate_version"] == body["version"]


def test_a_closed_ticket_is_final_but_may_be_deleted(client, db):
    ticket = ticket_in(client, "closed")
    url = f"{BASE}/{ticket['id']}"
    before = snapshot(db)
    assert "closed" in assert_problem(client.patch(url, json={"subject": "X"}), 409)["detail"]
    assert_problem(client.patch(url, json={"status": "open"}), 409)
    assert_problem(client.post(f"{url}/assign", json={"assignee_id": AGENT_ID}), 409)
    assert snapshot(db) == before
    assert client.patch(url, json={"status": "closed"}).status_code == 200  # nothing to do
    assert client.delete(url).status_code == 204


def test_assigning_a_new_ticket_opens_it_and_records_the_assignment(client, db, refreshes):
    ticket = new_ticket(client)
    url = f"{BASE}/{ticket['id']}/assign"
    response = client.post(url, json={"assignee_id": AGENT_ID}, headers={"If-Match": '"1"'})
    body = response.get_json()
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    assert body["assignee_id"] == AGENT_ID and body["status"] == "open"
    assigned = outbox_events(db, "ticket.assigned")
    assert assigned[0]["data"]["previous_assignee_id"] is None
    [moved] = outbox_events(db, "ticket.status_changed")
    assert (moved["data"]["from"], moved["data"]["to"]) == ("new", "open")
    assert refreshes[-1] == ("open", "new")
    again = client.post(url, json={"assignee_id": OTHER_AGENT}).get_json()
    assert again["assignee_id"] == OTHER_AGENT and again["version"] == 3
    assert outbox_events(db, "ticket.assigned")[-1]["data"]["previous_assignee_id"] == AGENT_ID
    unassigned = client.post(url, json={"assignee_id": None}).get_json()
    assert unassigned["assignee_id"] is None and unassigned["status"] == "open"
    assert len(outbox_events(db, "ticket.status_changed")) == 1


def test_patching_the_assignee_records_the_assignment_too(client, db):
    ticket = new_ticket(client)
    url = f"{BASE}/{ticket['id']}"
    body = client.patch(url, json={"assignee_id": AGENT_ID, "status": "pending"}).get_json()
    assert body["assignee_id"] == AGENT_ID and body["status"] == "pending"
    assert body["sla"]["paused"] is True
    [event] = outbox_events(db, "ticket.assigned")
    assert event["data"]["assignee_id"] == AGENT_ID
    assert outbox_events(db, "ticket.updated") == []


@pytest.mark.parametrize(
    "payload", [{}, {"assignee_id": "bob"}, {"assignee_id": AGENT_ID, "note": "x"}, []]
)
def test_bad_assignments_are_refused_and_change_nothing(client, db, payload):
    ticket = new_ticket(client)
    before = snapshot(db)
    response = client.post(f"{BASE}/{ticket['id']}/assign", json=payload)
    assert_problem(response, 400 if isinstance(payload, list) else 422)
    assert snapshot(db) == before


def test_deleting_a_ticket_answers_204_records_it_and_removes_its_comments(client, db):
    ticket = new_ticket(client)
    url = f"{BASE}/{ticket['id']}"
    client.post(f"{url}/comments", json={"body": "Hello"})
    assert client.delete(url).status_code == 204
    assert_problem(client.get(url), 404)
    assert_problem(client.delete(url), 404)
    [event] = outbox_events(db, "ticket.deleted")
    assert event["aggregate_id"] == ticket["id"] and event["aggregate_version"] == 3
    assert row_counts(db, "tickets", "comments") == {"tickets": 0, "comments": 0}


def test_every_change_is_a_new_version_and_its_events_carry_it(client, db):
    ticket = new_ticket(client)
    url = f"{BASE}/{ticket['id']}"
    client.patch(url, json={"priority": "high"})
    client.post(f"{url}/assign", json={"assignee_id": AGENT_ID})
    client.patch(url, json={"status": "resolved"})
    client.patch(url, json={"status": "open"})
    client.delete(url)
    events = [(e["type"], e["aggregate_version"]) for e in outbox_events(db)]
    assert events == [
        ("ticket.created", 1),
        ("ticket.updated", 2),
        ("ticket.assigned", 3),
        ("ticket.status_changed", 3),
        ("ticket.status_changed", 4),
        ("ticket.resolved", 4),
        ("ticket.status_changed", 5),
        ("ticket.reopened", 5),
        ("ticket.deleted", 6),
    ]
    assert all(e["data"]["ticket_id"] == ticket["id"] for e in outbox_events(db))


def test_reads_need_a_token_and_writes_need_support_or_admin(app, anonymous, client):
    ticket = new_ticket(client)
    url = f"{BASE}/{ticket['id']}"
    assert_problem(anonymous.get(BASE), 401)
    for role in ("viewer", "sales", "marketing"):
        headers = bearer(app, role, OTHER_AGENT)
        assert anonymous.get(url, headers=headers).status_code == 200
        assert anonymous.post(f"{BASE}/search", json={}, headers=headers).status_code == 200
        payload = {"subject": "X", "contact_id": CONTACT}
        assert_problem(anonymous.post(BASE, json=payload, headers=headers), 403)
        assert_problem(anonymous.patch(url, json={"subject": "X"}, headers=headers), 403)
        assert_problem(
            anonymous.post(f"{url}/assign", json={"assignee_id": None}, headers=headers), 403
        )
        assert_problem(anonymous.delete(url, headers=headers), 403)
    support = bearer(app, "support", AGENT_ID)
    payload = {"subject": "Mine", "contact_id": CONTACT}
    assert anonymous.post(BASE, json=payload, headers=support).status_code == 201
    assert client.get(url).get_json()["version"] == 1


def test_the_sla_clocks_follow_the_ticket(client):
    for priority, first, resolution in (("normal", 60, 480), ("urgent", 15, 120)):
        policy = {
            "name": priority,
            "priority": priority,
            "first_response_minutes": first,
            "resolution_minutes": resolution,
        }
        assert client.post("/api/v1/sla-policies", json=policy).status_code == 201
    ticket = new_ticket(client)
    assert ticket["sla"]["policy_id"] and ticket["first_response_due_at"]
    assert ticket["resolution_due_at"] == ticket["sla"]["resolution_due_at"] is not None
    url = f"{BASE}/{ticket['id']}"
    pending = client.patch(url, json={"status": "pending"}).get_json()
    assert pending["sla"]["paused"] is True and pending["resolution_due_at"] is None
    running = client.patch(url, json={"status": "open"}).get_json()
    assert running["sla"]["paused"] is False and running["resolution_due_at"] is not None
    urgent = client.patch(url, json={"priority": "urgent"}).get_json()
    assert urgent["sla"]["policy_id"] != ticket["sla"]["policy_id"]
    due = datetime.fromisoformat
    assert due(urgent["resolution_due_at"]) < due(running["resolution_due_at"])
