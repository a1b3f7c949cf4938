"""The subscriptions API: mailing lists, subscribing and unsubscribing with their ledger and
events, suppressions and the ledger over HTTP, roles, and bad input that changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.marketing.tests.conftest import ADMIN_ID, row_counts, token_for
from services.marketing.tests.consent_helpers import (
    LISTS,
    PROBLEM,
    RECORDS,
    SUBSCRIPTIONS,
    SUPPRESSIONS,
    add_contact,
    add_list,
    changes,
    ledger,
    mail_requests,
    status_of,
    subscribe,
    suppressions,
)

CONSENT_TABLES = ("subscription_lists", "subscriptions", "consent_records", "suppressions")


def as_role(app: Any, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(app, role)}"}


def counts(db: Any) -> dict[str, int]:
    return row_counts(db, *CONSENT_TABLES, "outbox")


# --- mailing lists --------------------------------------------------------------------------


def test_a_list_is_created_read_changed_and_deleted(client):
    response = client.post(LISTS, json={"name": "Product news", "double_opt_in": True})
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"{LISTS}/{body['id']}"
    assert (body["name"], body["double_opt_in"], body["description"]) == (
        "Product news",
        True,
        None,
    )
    assert body["version"] == 1 and body["created_at"].endswith("Z")
    assert client.get(f"{LISTS}/{body['id']}").get_json() == body

    changed = client.patch(f"{LISTS}/{body['id']}", json={"description": "Monthly"})
    assert changed.status_code == 200 and changed.headers["ETag"] == '"2"'
    stale = client.patch(
        f"{LISTS}/{body['id']}", json={"name": "News"}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 409
    assert [item["name"] for item in client.get(f"{LISTS}?q=product").get_json()["items"]] == [
        "Product news"
    ]
    assert client.delete(f"{LISTS}/{body['id']}").status_code == 204
    assert client.get(f"{LISTS}/{body['id']}").status_code == 404


def test_a_taken_list_name_is_a_409_whatever_its_case(client, db):
    add_list(db, "Product news")
    before = counts(db)
    response = client.post(LISTS, json={"name": " product NEWS "})
    assert response.status_code == 409 and response.mimetype == PROBLEM
    assert counts(db) == before


def test_a_list_with_subscribers_is_not_deleted_one_without_takes_its_rows(client, db):
    list_id, ada = add_list(db), add_contact(db)
    subscribe(client, ada, list_id)
    response = client.delete(f"{LISTS}/{list_id}")
    assert response.status_code == 409 and response.mimetype == PROBLEM
    client.post(
        SUBSCRIPTIONS, json={"contact_id": ada, "list_id": list_id, "status": "unsubscribed"}
    )
    assert client.delete(f"{LISTS}/{list_id}").status_code == 204
    assert row_counts(db, "subscriptions") == {"subscriptions": 0}
    assert [line.list_id for line in ledger(db)] == [list_id, list_id]  # the ledger remains


# --- subscribing and unsubscribing ----------------------------------------------------------


def test_subscribing_records_the_row_a_ledger_line_and_an_event(client, db):
    list_id, ada = add_list(db), add_contact(db)
    response = subscribe(
        client, ada, list_id, source="form", ip="203.0.113.9", user_agent="Firefox"
    )
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"{SUBSCRIPTIONS}/{body['id']}"
    assert (body["status"], body["source"], body["list"]) == ("subscribed", "form", "Product news")
    assert body["consented_at"] == body["updated_at"]
    [line] = ledger(db)
    assert (line.contact_id, line.email, line.list_id, line.action, line.source) == (
        ada,
        "ada@example.com",
        list_id,
        "subscribed",
        "form",
    )
    assert (line.ip, line.user_agent, line.actor_id) == ("203.0.113.9", "Firefox", ADMIN_ID)
    [event] = changes(db)
    assert event == {
        "contact_id": ada,
        "email": "ada@example.com",
        "subscription_id": body["id"],
        "list_id": list_id,
        "list": "Product news",
        "status": "subscribed",
        "previous_status": None,
        "source": "form",
        "double_opt_in": False,
        "all_lists": False,
        "occurred_at": body["updated_at"],
    }
    assert client.get(f"{SUBSCRIPTIONS}/{body['id']}").get_json() == body


def test_asking_again_for_the_same_status_changes_nothing(client, db):
    list_id, ada = add_list(db), add_contact(db)
    first = subscribe(client, ada, list_id).get_json()
    before = counts(db)
    again = subscribe(client, ada, list_id)
    assert again.status_code == 200 and again.get_json() == first
    assert counts(db) == before


def test_unsubscribing_ends_the_consent_and_says_so(client, db):
    list_id, ada = add_list(db), add_contact(db)
    subscribe(client, ada, list_id)
    body = {"contact_id": ada, "list_id": list_id, "status": "unsubscribed"}
    response = client.post(SUBSCRIPTIONS, json=body)
    assert response.status_code == 200
    answer = response.get_json()
    assert (answer["status"], answer["consented_at"], answer["version"]) == (
        "unsubscribed",
        None,
        2,
    )
    assert [line.action for line in ledger(db)] == ["subscribed", "unsubscribed"]
    last = changes(db)[-1]
    assert (last["status"], last["previous_status"], last["source"]) == (
        "unsubscribed",
        "subscribed",
        "api",
    )


def test_without_a_list_the_newsletter_is_meant(client, db):
    ada = add_contact(db)
    body = subscribe(client, ada).get_json()
    assert body["list"] == "newsletter"
    [newsletter] = client.get(LISTS).get_json()["items"]
    assert newsletter["id"] == body["list_id"] and newsletter["double_opt_in"] is False


def test_the_list_filters_and_pages(client, db):
    news, offers = add_list(db, "News"), add_list(db, "Offers")
    ada, grace = add_contact(db), add_contact(db, "grace@example.com")
    for contact in (ada, grace):
        subscribe(client, contact, news)
    client.post(
        SUBSCRIPTIONS, json={"contact_id": ada, "list_id": offers, "status": "unsubscribed"}
    )

    def listed(query: str) -> list[tuple[str, str]]:
        items = client.get(f"{SUBSCRIPTIONS}?{query}").get_json()["items"]
        return [(item["contact_id"], item["list"]) for item in items]

    assert listed(f"contact_id={ada}") == [(ada, "News"), (ada, "Offers")]
    assert listed(f"list_id={news}") == [(ada, "News"), (grace, "News")]
    assert listed("status=unsubscribed") == [(ada, "Offers")]
    first = client.get(f"{SUBSCRIPTIONS}?limit=2").get_json()
    rest = client.get(f"{SUBSCRIPTIONS}?limit=2&cursor={first['next_cursor']}").get_json()
    assert len(first["items"]) == 2 and len(rest["items"]) == 1 and rest["next_cursor"] is None


def test_an_unknown_subscription_is_a_404(client):
    response = client.get(f"{SUBSCRIPTIONS}/{uuid.uuid4()}")
    assert response.status_code == 404 and response.mimetype == PROBLEM


def test_a_suppressed_address_cannot_be_subscribed(client, db):
    ada = add_contact(db)
    client.post(SUPPRESSIONS, json={"email": "ada@example.com", "reason": "complained"})
    before = counts(db)
    response = subscribe(client, ada)
    assert response.status_code == 409 and "complained" in response.get_json()["detail"]
    assert counts(db) == before


# --- bad input and roles --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"contact_id": "not-a-uuid"}, "contact_id"),
        ({"contact_id": None}, "contact_id"),
        ({"status": "pending"}, "status"),
        ({"status": "maybe"}, "status"),
        ({"source": "bounce"}, "source"),
        ({"double_opt_in": "perhaps"}, "double_opt_in"),
        ({"status": "unsubscribed", "double_opt_in": True}, "double_opt_in"),
        ({"ip": "999.1.1.1"}, "ip"),
        ({"user_agent": "x" * 301}, "user_agent"),
        ({"user_agent": "nul\x00"}, "user_agent"),
        ({"surprise": 1}, "surprise"),
        ({"list_id": str(uuid.uuid4())}, "list_id"),
        ({"contact_id": str(uuid.uuid4())}, "contact_id"),
    ],
)
def test_a_bad_subscription_is_a_422_and_changes_nothing(client, db, change, field):
    ada = add_contact(db)
    before = counts(db)
    response = client.post(
        SUBSCRIPTIONS, json={"contact_id": ada, "status": "subscribed", **change}
    )
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert field in response.get_json()["errors"]
    assert counts(db) == before


def test_an_erased_or_addressless_contact_cannot_be_subscribed(client, db):
    erased, no_address = add_contact(db, None, erased=True), add_contact(db, None)
    before = counts(db)
    for contact in (erased, no_address):
        response = subscribe(client, contact)
        assert response.status_code == 422 and "contact_id" in response.get_json()["errors"]
    assert counts(db) == before


@pytest.mark.parametrize(
    ("method", "path_of", "body"),
    [
        ("post", lambda ids: LISTS, {"name": ""}),
        ("post", lambda ids: LISTS, {"name": "x" * 101}),
        ("post", lambda ids: LISTS, {"name": "News", "double_opt_in": "often"}),
        ("post", lambda ids: LISTS, {"name": "News", "id": "nope"}),
        ("post", lambda ids: LISTS, {"name": "News", "colour": "red"}),
        ("patch", lambda ids: f"{LISTS}/{ids['list']}", {"name": "   "}),
        ("patch", lambda ids: f"{LISTS}/{ids['list']}", {"description": "x" * 1001}),
        ("post", lambda ids: SUPPRESSIONS, {"email": "not an address"}),
        ("post", lambda ids: SUPPRESSIONS, {"email": "a@example.com", "reason": "erased"}),
        ("post", lambda ids: SUPPRESSIONS, {"email": "a@example.com", "why": "x"}),
        ("delete", lambda ids: f"{SUPPRESSIONS}/kept@example.com?force=perhaps", None),
        ("delete", lambda ids: f"{SUPPRESSIONS}/kept@example.com?surprise=1", None),
    ],
)
def test_bad_input_on_every_write_route_is_a_422_and_changes_nothing(
    client, db, method, path_of, body
):
    ids = {"list": add_list(db)}
    client.post(SUPPRESSIONS, json={"email": "kept@example.com"})
    before = counts(db)
    response = getattr(client, method)(path_of(ids), json=body)
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert response.get_json()["errors"]
    assert counts(db) == before


def test_malformed_json_is_a_400(client, db):
    before = counts(db)
    for path in (LISTS, SUBSCRIPTIONS, SUPPRESSIONS):
        response = client.post(path, data="{", content_type="application/json")
        assert response.status_code == 400 and response.mimetype == PROBLEM
    assert counts(db) == before


@pytest.mark.parametrize("role", ["viewer", "sales", "support"])
def test_only_marketing_and_admins_change_consent(app, client, db, role):
    list_id, ada = add_list(db), add_contact(db)
    client.post(SUPPRESSIONS, json={"email": "kept@example.com"})
    headers = as_role(app, role)
    before = counts(db)
    writes = [
        ("post", LISTS, {"name": "Another"}),
        ("patch", f"{LISTS}/{list_id}", {"name": "Renamed"}),
        ("delete", f"{LISTS}/{list_id}", None),
        ("post", SUBSCRIPTIONS, {"contact_id": ada, "status": "subscribed"}),
        ("post", SUPPRESSIONS, {"email": "b@example.com"}),
        ("delete", f"{SUPPRESSIONS}/kept@example.com", None),
    ]
    client_of_role = app.test_client()
    for method, path, body in writes:
        response = getattr(client_of_role, method)(path, json=body, headers=headers)
        assert response.status_code == 403, (method, path)
    assert counts(db) == before
    for path in (LISTS, SUBSCRIPTIONS, SUPPRESSIONS, RECORDS, f"{LISTS}/{list_id}"):
        assert client_of_role.get(path, headers=headers).status_code == 200


def test_marketing_may_write(app, db):
    ada, headers = add_contact(db), as_role(app, "marketing")
    response = app.test_client().post(
        SUBSCRIPTIONS, json={"contact_id": ada, "status": "subscribed"}, headers=headers
    )
    assert response.status_code == 201


def test_without_a_token_the_api_is_closed(anonymous):
    for path in (LISTS, SUBSCRIPTIONS, SUPPRESSIONS, RECORDS):
        assert anonymous.get(path).status_code == 401


# --- suppressions and the ledger ------------------------------------------------------------


def test_a_manual_suppression_is_added_listed_and_lifted(client, db):
    response = client.post(SUPPRESSIONS, json={"email": "Ada@Example.com"})
    assert response.status_code == 201
    assert response.headers["Location"] == f"{SUPPRESSIONS}/ada@example.com"
    body = response.get_json()
    assert (body["email"], body["reason"], body["source"]) == ("ada@example.com", "manual", "api")
    again = client.post(SUPPRESSIONS, json={"email": "ada@example.com"})
    assert again.status_code == 200 and row_counts(db, "suppressions") == {"suppressions": 1}
    assert client.get(f"{SUPPRESSIONS}/ADA@example.com").get_json() == body
    listed = client.get(f"{SUPPRESSIONS}?email=ada@EXAMPLE.com&reason=manual").get_json()
    assert listed["items"] == [body]
    assert client.get(f"{SUPPRESSIONS}?reason=bounced").get_json()["items"] == []
    assert client.delete(f"{SUPPRESSIONS}/ada@example.com").status_code == 204
    assert client.get(f"{SUPPRESSIONS}/ada@example.com").status_code == 404
    assert client.delete(f"{SUPPRESSIONS}/ada@example.com").status_code == 404
    assert [(line.action, line.reason) for line in ledger(db)] == [
        ("suppressed", "manual"),
        ("suppression_lifted", "manual"),
    ]


def test_a_complaint_is_lifted_only_by_an_admin_who_forces_it(app, client, db):
    client.post(SUPPRESSIONS, json={"email": "ada@example.com", "reason": "complained"})
    refused = client.delete(f"{SUPPRESSIONS}/ada@example.com")
    assert refused.status_code == 409 and refused.mimetype == PROBLEM
    marketing = app.test_client()
    forced = marketing.delete(
        f"{SUPPRESSIONS}/ada@example.com?force=true", headers=as_role(app, "marketing")
    )
    assert forced.status_code == 403
    assert len(suppressions(db)) == 1
    assert client.delete(f"{SUPPRESSIONS}/ada@example.com?force=true").status_code == 204
    assert suppressions(db) == []


def test_a_manual_entry_never_hides_a_stronger_reason(client, db):
    client.post(SUPPRESSIONS, json={"email": "ada@example.com", "reason": "complained"})
    again = client.post(SUPPRESSIONS, json={"email": "ada@example.com"})
    assert again.status_code == 200 and again.get_json()["reason"] == "complained"


def test_the_ledger_is_listed_newest_first_and_filtered(client, db):
    news, ada = add_list(db, "News"), add_contact(db)
    grace = add_contact(db, "grace@example.com")
    subscribe(client, ada, news)
    subscribe(client, grace, news)
    client.post(SUBSCRIPTIONS, json={"contact_id": ada, "list_id": news, "status": "unsubscribed"})
    everything = client.get(RECORDS).get_json()["items"]
    assert [(item["contact_id"], item["action"]) for item in everything] == [
        (ada, "unsubscribed"),
        (grace, "subscribed"),
        (ada, "subscribed"),
    ]
    theirs = client.get(f"{RECORDS}?contact_id={ada}&action=subscribed").get_json()["items"]
    assert [item["id"] for item in theirs] == [everything[2]["id"]]
    by_email = client.get(f"{RECORDS}?email=GRACE@example.com").get_json()["items"]
    assert [item["contact_id"] for item in by_email] == [grace]
    assert client.get(f"{RECORDS}?action=deleted").status_code == 422


def test_a_double_opt_in_list_makes_the_subscription_pending(client, db):
    list_id, ada = add_list(db, "Letters", double_opt_in=True), add_contact(db)
    body = subscribe(client, ada, list_id, double_opt_in=False).get_json()
    assert (body["status"], body["consented_at"]) == ("pending", None)
    assert status_of(db, ada, list_id) == "pending"
    [request] = mail_requests(db)
    assert request["to"] == "Ada@Example.com" and request["category"] == "transactional"
