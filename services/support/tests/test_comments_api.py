"""Comments on tickets: replies and notes, first response, status moves, lists, bad input."""

from __future__ import annotations

import pytest

from services.support import sla
from services.support.tests.conftest import ADMIN_ID, AGENT_ID, row_counts
from services.support.tests.ticket_helpers import (
    BASE,
    UNKNOWN,
    assert_problem,
    bearer,
    new_ticket,
    outbox_events,
    snapshot,
    ticket_in,
)


@pytest.fixture
def refreshes(monkeypatch) -> list[tuple[str, str | None]]:
    """Every call of sla.refresh: (the ticket's status then, previous_status)."""
    calls: list[tuple[str, str | None]] = []

    def record(session, ticket, now, previous_status=None) -> None:
        calls.append((ticket.status, previous_status))

    monkeypatch.setattr(sla, "refresh", record)
    return calls


def comments_url(ticket: dict) -> str:
    return f"{BASE}/{ticket['id']}/comments"


def test_an_agents_first_public_reply_is_the_first_response_and_opens_the_ticket(
    client, db, refreshes
):
    ticket = new_ticket(client)
    response = client.post(comments_url(ticket), json={"body": "We are on it."})
    assert response.status_code == 201
    comment = response.get_json()
    assert response.headers["Location"] == f"{comments_url(ticket)}/{comment['id']}"
    assert comment["public"] is True and comment["author_kind"] == "agent"
    assert comment["author_id"] == ADMIN_ID and comment["ticket_id"] == ticket["id"]
    after = client.get(f"{BASE}/{ticket['id']}").get_json()
    assert after["status"] == "open" and after["first_responded_at"] == comment["created_at"]
    assert after["version"] == 2
    assert refreshes[-1] == ("open", "new")
    [event] = outbox_events(db, "ticket.commented")
    data = event["data"]
    assert (data["ticket_id"], data["comment_id"], data["body"]) == (
        ticket["id"],
        comment["id"],
        "We are on it.",
    )
    assert data["contact_id"] == ticket["contact_id"] and data["author_kind"] == "agent"
    assert event["aggregate_version"] == 2
    [moved] = outbox_events(db, "ticket.status_changed")
    assert (moved["data"]["from"], moved["data"]["to"]) == ("new", "open")
    client.post(comments_url(ticket), json={"body": "Still on it."})
    later = client.get(f"{BASE}/{ticket['id']}").get_json()
    assert later["first_responded_at"] == after["first_responded_at"] and later["version"] == 3
    assert len(refreshes) == 2  # a later reply moves no clock


def test_an_internal_note_is_no_response_and_keeps_its_body_out_of_the_event(client, db, refreshes):
    ticket = new_ticket(client)
    note = client.post(comments_url(ticket), json={"body": "Customer is grumpy", "public": False})
    assert note.status_code == 201 and note.get_json()["public"] is False
    after = client.get(f"{BASE}/{ticket['id']}").get_json()
    assert after["status"] == "new" and after["first_responded_at"] is None
    assert refreshes == [("new", None)]
    [event] = outbox_events(db, "ticket.commented")
    assert event["data"]["public"] is False and "body" not in event["data"]
    assert "Customer is grumpy" not in str(outbox_events(db))


SECRET = "Refund fraud suspected"


@pytest.fixture
def noted(client) -> tuple[dict, dict, dict]:
    """A ticket with a public reply and an internal note holding SECRET."""
    ticket = new_ticket(client, subject="Printer jam")
    reply = client.post(comments_url(ticket), json={"body": "We are on it."}).get_json()
    note = client.post(comments_url(ticket), json={"body": SECRET, "public": False}).get_json()
    return ticket, reply, note


@pytest.mark.parametrize("role", ["sales", "marketing", "viewer"])
def test_an_internal_note_is_in_no_list_or_view_of_other_roles(app, anonymous, noted, role):
    ticket, reply, note = noted
    headers = bearer(app, role, AGENT_ID)

    for query in ("", "?public=false", "?author_kind=agent", "?sort=-created_at"):
        listed = anonymous.get(f"{comments_url(ticket)}{query}", headers=headers)
        assert listed.status_code == 200
        assert [c["id"] for c in listed.get_json()["items"]] == (
            [] if "false" in query else [reply["id"]]
        )
        assert SECRET not in listed.get_data(as_text=True)
    assert_problem(anonymous.get(f"{comments_url(ticket)}/{note['id']}", headers=headers), 404)
    assert (
        anonymous.get(f"{comments_url(ticket)}/{reply['id']}", headers=headers).status_code == 200
    )
    for url in (f"{BASE}?q=fraud", f"{BASE}/{ticket['id']}", f"{BASE}?include=csat"):
        assert SECRET not in anonymous.get(url, headers=headers).get_data(as_text=True)
    search = {"query": "fraud", "filter_groups": []}
    found = anonymous.post(f"{BASE}/search", json=search, headers=headers).get_json()["items"]
    assert found == []


@pytest.mark.parametrize("role", ["support", "admin"])
def test_support_and_admins_read_internal_notes(app, anonymous, noted, role):
    ticket, reply, note = noted
    headers = bearer(app, role, AGENT_ID)

    listed = anonymous.get(comments_url(ticket), headers=headers).get_json()["items"]
    assert [c["id"] for c in listed] == [reply["id"], note["id"]]
    one = anonymous.get(f"{comments_url(ticket)}/{note['id']}", headers=headers).get_json()
    assert one["body"] == SECRET and one["public"] is False


def test_a_customer_reply_to_a_pending_ticket_resumes_it(client, db, refreshes):
    ticket = ticket_in(client, "pending")
    response = client.post(comments_url(ticket), json={"body": "Here", "author_kind": "customer"})
    comment = response.get_json()
    assert comment["author_kind"] == "customer" and comment["author_id"] == ticket["contact_id"]
    after = client.get(f"{BASE}/{ticket['id']}").get_json()
    assert after["status"] == "open" and after["first_responded_at"] is None
    assert refreshes[-1] == ("open", "pending")
    assert outbox_events(db, "ticket.status_changed")[-1]["data"]["from"] == "pending"


def test_a_customer_reply_to_a_resolved_ticket_reopens_it(client, db):
    ticket = ticket_in(client, "resolved")
    client.post(comments_url(ticket), json={"body": "Still broken", "author_kind": "customer"})
    after = client.get(f"{BASE}/{ticket['id']}").get_json()
    assert after["status"] == "open" and after["reopened_count"] == 1
    assert len(outbox_events(db, "ticket.reopened")) == 1


def test_a_customer_comment_on_a_new_ticket_is_no_first_response(client):
    ticket = new_ticket(client)
    client.post(comments_url(ticket), json={"body": "More detail", "author_kind": "customer"})
    after = client.get(f"{BASE}/{ticket['id']}").get_json()
    assert after["status"] == "new" and after["first_responded_at"] is None


def test_a_closed_ticket_takes_no_comments(client, db):
    ticket = ticket_in(client, "closed")
    before = snapshot(db)
    body = assert_problem(client.post(comments_url(ticket), json={"body": "Hello?"}), 409)
    assert "closed" in body["detail"]
    assert snapshot(db) == before


def test_comments_list_oldest_first_and_page(client):
    ticket = new_ticket(client)
    for index in range(5):
        client.post(comments_url(ticket), json={"body": f"C{index}", "public": index % 2 == 0})
    seen, cursor = [], None
    while True:
        url = f"{comments_url(ticket)}?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url).get_json()
        seen += [c["body"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["C0", "C1", "C2", "C3", "C4"]
    notes = client.get(f"{comments_url(ticket)}?public=false").get_json()["items"]
    assert [c["body"] for c in notes] == ["C1", "C3"]
    newest = client.get(f"{comments_url(ticket)}?sort=-created_at&limit=1").get_json()
    assert newest["items"][0]["body"] == "C4"
    assert client.get(f"{comments_url(ticket)}?author_kind=customer").get_json()["items"] == []


def test_one_comment_is_found_only_under_its_ticket(client):
    ticket, other = new_ticket(client), new_ticket(client)
    comment = client.post(comments_url(ticket), json={"body": "Hi"}).get_json()
    response = client.get(f"{comments_url(ticket)}/{comment['id']}")
    assert response.status_code == 200 and response.get_json() == comment
    assert_problem(client.get(f"{comments_url(other)}/{comment['id']}"), 404)
    assert_problem(client.get(f"{comments_url(ticket)}/{UNKNOWN}"), 404)


def test_comments_of_an_unknown_ticket_are_404(client, db):
    url = f"{BASE}/{UNKNOWN}/comments"
    assert_problem(client.get(url), 404)
    before = snapshot(db)
    assert_problem(client.post(url, json={"body": "Hi"}), 404)
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "query",
    ["limit=0", "public=maybe", "author_kind=robot", "sort=body", "cursor=junk", "colour=red"],
)
def test_bad_comment_list_parameters_are_422(client, query):
    ticket = new_ticket(client)
    assert_problem(client.get(f"{comments_url(ticket)}?{query}"), 422)


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ("{nope", 400, None),
        ('["body"]', 400, None),
        ("{}", 422, "body"),
        ('{"body": ""}', 422, "body"),
        ('{"body": "   "}', 422, "body"),
        ('{"body": null}', 422, "body"),
        ('{"body": "Hi", "public": "perhaps"}', 422, "public"),
        ('{"body": "Hi", "author_kind": "robot"}', 422, "author_kind"),
        ('{"body": "Hi", "author_kind": "customer", "public": false}', 422, "public"),
        ('{"body": "Hi", "author_id": "' + UNKNOWN + '"}', 422, "author_id"),
        ('{"body": "Hi\\u0000"}', 422, "body"),
        ('{"body": "' + "x" * 100_001 + '"}', 422, "body"),
    ],
)
def test_bad_comments_are_refused_and_change_nothing(client, db, payload, status, field):
    ticket = new_ticket(client)
    before = snapshot(db)
    response = client.post(comments_url(ticket), data=payload, content_type="application/json")
    body = assert_problem(response, status)
    if field:
        assert field in body["errors"]
    assert snapshot(db) == before


def test_a_long_comment_up_to_the_limit_is_kept_whole(client):
    ticket = new_ticket(client)
    text = "é" * 100_000
    comment = client.post(comments_url(ticket), json={"body": text}).get_json()
    assert client.get(f"{comments_url(ticket)}/{comment['id']}").get_json()["body"] == text


def test_an_idempotency_key_adds_one_comment(client, db):
    ticket = new_ticket(client)
    headers = {"Idempotency-Key": "comment-1"}
    first = client.post(comments_url(ticket), json={"body": "Once"}, headers=headers)
    again = client.post(comments_url(ticket), json={"body": "Once"}, headers=headers)
    assert first.get_json() == again.get_json()
    assert row_counts(db, "comments")["comments"] == 1


def test_reading_comments_needs_a_token_and_writing_needs_support(app, anonymous, client):
    ticket = new_ticket(client)
    url = comments_url(ticket)
    assert_problem(anonymous.get(url), 401)
    for role in ("viewer", "sales", "marketing"):
        headers = bearer(app, role, AGENT_ID)
        assert anonymous.get(url, headers=headers).status_code == 200
        assert_problem(anonymous.post(url, json={"body": "Hi"}, headers=headers), 403)
    support = bearer(app, "support", AGENT_ID)
    comment = anonymous.post(url, json={"body": "Hi"}, headers=support).get_json()
    assert comment["author_id"] == AGENT_ID


def test_replies_move_the_real_sla_clocks(client):
    policy = {"name": "N", "priority": "normal", "first_response_minutes": 60}
    response = client.post("/api/v1/sla-policies", json={**policy, "resolution_minutes": 480})
    assert response.status_code == 201
    ticket = ticket_in(client, "pending")
    assert ticket["resolution_due_at"] is None and ticket["sla"]["paused"] is True
    client.post(comments_url(ticket), json={"body": "Back", "author_kind": "customer"})
    resumed = client.get(f"{BASE}/{ticket['id']}").get_json()
    assert resumed["resolution_due_at"] is not None and resumed["sla"]["paused"] is False
    client.post(comments_url(ticket), json={"body": "Answer"})
    answered = client.get(f"{BASE}/{ticket['id']}").get_json()
    assert answered["first_responded_at"] is not None
    assert answered["sla"]["first_response_breached"] is False
