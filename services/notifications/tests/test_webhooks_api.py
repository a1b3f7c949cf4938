"""The webhooks API: admin only, the secret shown once, validation, deliveries and replay."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from services.notifications import webhooks
from services.notifications.models import Webhook, WebhookDelivery
from services.notifications.tests.conftest import row_counts, token_for
from services.notifications.webhooks import on_any_event
from shared.events import utcnow
from shared.testing import make_event

HOOK = {"url": "https://hooks.example.com/crm", "event_types": ["deal.won", "ticket.*"]}


def create(client: Any, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/v1/webhooks", json={**HOOK, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def client_as(app: Any, role: str) -> Any:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app, role)}"
    return client


def fan_out(db: Any, event_type: str = "deal.won") -> str:
    event = make_event(event_type, {"n": 1})
    with db.session() as session:
        on_any_event(session, event)
    return event.id


def set_delivery(db: Any, event_id: str, **values: Any) -> str:
    with db.session() as session:
        delivery = session.scalars(
            sa.select(WebhookDelivery).where(WebhookDelivery.event_id == event_id)
        ).one()
        for name, value in values.items():
            setattr(delivery, name, value)
        return delivery.id


# --- patterns and URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("deal.won", "deal.won", True),
        ("deal.won", "deal.lost", False),
        ("ticket.*", "ticket.created", True),
        ("ticket.*", "tickets.created", False),
        ("*.created", "contact.created", True),
        ("*.created", "contact.updated", False),
        ("*", "email.sent", True),
        ("deal.*", "deal", False),
    ],
)
def test_a_pattern_matches_whole_segments(pattern, event_type, expected):
    assert webhooks.matches(pattern, event_type) is expected


@pytest.mark.parametrize("pattern", ["", "deal", "deal.won.x", "*.*x", "Deal.won", "**", "a.b*"])
def test_malformed_patterns_are_refused(pattern):
    assert webhooks.is_pattern(pattern) is False


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://hooks.example.com/crm?x=1", True),
        ("http://127.0.0.1:8080/hook", False),  # loopback: only when opened (below)
        ("http://localhost/hook", False),
        ("http://hooks.example.com/crm", False),
        ("ftp://hooks.example.com/", False),
        ("https:///no-host", False),
        ("https://user:pw@hooks.example.com/", False),
        ("https://hooks.example.com:99999/", False),
        ("https://hooks.example.com/a b", False),
    ],
)
def test_webhook_urls_are_https_or_loopback_http(url, accepted):
    assert (webhooks.url_problem(url) is None) is accepted


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("http://127.0.0.1:8080/hook", True),
        ("http://localhost/hook", True),
        ("https://[::1]:8443/hook", True),
        ("http://hooks.example.com/crm", False),  # plain http stays loopback only
        ("http://10.0.0.1/", False),
    ],
)
def test_with_loopback_opened_plain_http_to_it_is_accepted(url, accepted):
    opened = webhooks.allowed_networks(["127.0.0.0/8", "::1/128"])
    assert (webhooks.url_problem(url, opened) is None) is accepted


def test_a_private_network_is_refused_until_the_operator_opens_it(app, client):
    inside = {**HOOK, "url": "https://10.20.0.5/hook"}
    refused = client.post("/api/v1/webhooks", json=inside)
    assert (
        refused.status_code == 422 and "internal address" in refused.get_json()["errors"]["url"][0]
    )

    settings = app.extensions["crm.settings"]
    opened = {**settings.extra, "webhook_allowed_networks": ("10.20.0.0/16", "not-a-network")}
    app.extensions["crm.settings"] = settings.with_overrides(extra=opened)

    assert client.post("/api/v1/webhooks", json=inside).status_code == 201
    elsewhere = {**HOOK, "url": "https://10.30.0.5/hook"}
    assert client.post("/api/v1/webhooks", json=elsewhere).status_code == 422
    metadata = {**HOOK, "url": "https://169.254.169.254/latest"}
    assert client.post("/api/v1/webhooks", json=metadata).status_code == 422


def test_a_delivery_checks_the_opened_networks_again_when_it_is_sent():
    opened = webhooks.allowed_networks(["10.20.0.0/16"])
    assert webhooks.host_problem("10.20.0.5", resolve=True, allowed=opened) is None
    assert webhooks.host_problem("10.20.0.5", resolve=True) is not None
    assert webhooks.host_problem("192.168.1.1", resolve=True, allowed=opened) is not None


# --- create and read -----------------------------------------------------------------------


def test_creating_a_webhook_shows_its_generated_secret_once(client):
    response = client.post("/api/v1/webhooks", json=HOOK)
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"/api/v1/webhooks/{body['id']}"
    assert response.headers["ETag"] == '"1"'
    assert len(body["secret"]) >= 43 and body["secret_set"] is True
    assert set(body["secret"]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )
    assert body["url"] == HOOK["url"] and body["event_types"] == HOOK["event_types"]
    assert body["active"] is True and body["consecutive_failures"] == 0
    shown = client.get(f"/api/v1/webhooks/{body['id']}").get_json()
    assert "secret" not in shown and shown["secret_set"] is True
    listed = client.get("/api/v1/webhooks").get_json()
    assert [item["id"] for item in listed["items"]] == [body["id"]]
    assert "secret" not in listed["items"][0] and listed["next_cursor"] is None


def test_a_given_secret_is_kept_and_patterns_are_deduplicated(client, db):
    body = create(client, secret="my-own-secret-0123456789", event_types=["*", "*", "deal.won"])
    assert body["secret"] == "my-own-secret-0123456789"
    assert body["event_types"] == ["*", "deal.won"]
    with db.session() as session:
        assert session.get(Webhook, body["id"]).secret == "my-own-secret-0123456789"


def test_two_generated_secrets_differ(client):
    assert create(client)["secret"] != create(client)["secret"]


def test_http_to_localhost_is_allowed_only_once_loopback_is_opened(app, client):
    local = {**HOOK, "url": "http://127.0.0.1:9000/hook"}
    refused = client.post("/api/v1/webhooks", json=local)
    assert (
        refused.status_code == 422 and "internal address" in refused.get_json()["errors"]["url"][0]
    )
    settings = app.extensions["crm.settings"]
    opened = {**settings.extra, "webhook_allowed_networks": ("127.0.0.0/8",)}
    app.extensions["crm.settings"] = settings.with_overrides(extra=opened)
    assert create(client, url=local["url"])["url"] == local["url"]


def test_the_same_idempotency_key_creates_one_webhook(client, db):
    headers = {"Idempotency-Key": "hook-1"}
    first = client.post("/api/v1/webhooks", json=HOOK, headers=headers)
    second = client.post("/api/v1/webhooks", json=HOOK, headers=headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.get_json()["id"] == second.get_json()["id"]
    assert row_counts(db, "webhooks") == {"webhooks": 1}


def test_the_list_filters_by_active_and_pages(client):
    ids = [create(client)["id"] for _ in range(3)]
    client.patch(f"/api/v1/webhooks/{ids[1]}", json={"active": False})
    first = client.get("/api/v1/webhooks?limit=2").get_json()
    second = client.get(f"/api/v1/webhooks?limit=2&cursor={first['next_cursor']}").get_json()
    assert [i["id"] for i in first["items"] + second["items"]] == ids
    assert second["next_cursor"] is None
    active = client.get("/api/v1/webhooks?active=false").get_json()["items"]
    assert [item["id"] for item in active] == [ids[1]]


# --- who may ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["sales", "support", "marketing", "viewer"])
def test_only_admins_see_or_change_webhooks(app, client, db, role):
    hook = create(client)["id"]
    other = client_as(app, role)
    calls = [
        other.get("/api/v1/webhooks"),
        other.get(f"/api/v1/webhooks/{hook}"),
        other.post("/api/v1/webhooks", json=HOOK),
        other.patch(f"/api/v1/webhooks/{hook}", json={"active": False}),
        other.delete(f"/api/v1/webhooks/{hook}"),
        other.get(f"/api/v1/webhooks/{hook}/deliveries"),
    ]
    assert [call.status_code for call in calls] == [403] * 6
    assert row_counts(db, "webhooks") == {"webhooks": 1}
    assert client.get(f"/api/v1/webhooks/{hook}").get_json()["active"] is True


def test_without_a_token_it_is_401(anonymous):
    assert anonymous.get("/api/v1/webhooks").status_code == 401
    assert anonymous.post("/api/v1/webhooks", json=HOOK).status_code == 401


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://hooks.example.com/"}, "url"),
        ({"url": "ftp://hooks.example.com/"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "https://u:p@hooks.example.com/"}, "url"),
        ({"url": "https://hooks.example.com:70000/"}, "url"),
        ({"url": "https://hooks.example.com/\x00"}, "url"),
        ({"url": 42}, "url"),
        ({"url": "https://h.example.com/" + "a" * 2000}, "url"),
        ({"event_types": []}, "event_types"),
        ({"event_types": "deal.won"}, "event_types"),
        ({"event_types": ["deal"]}, "event_types"),
        ({"event_types": ["deal.won", 7]}, "event_types"),
        ({"event_types": ["x.y"] * 101}, "event_types"),
        ({"secret": "short"}, "secret"),
        ({"secret": "has spaces in the secret here"}, "secret"),
        ({"active": "maybe"}, "active"),
        ({"id": "not-a-uuid"}, "id"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_webhooks_are_refused_and_change_nothing(client, db, body, field):
    response = client.post("/api/v1/webhooks", json={**HOOK, **body})
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    assert row_counts(db, "webhooks") == {"webhooks": 0}


@pytest.mark.parametrize("field", ["url", "event_types"])
def test_a_webhook_needs_a_url_and_event_types(client, db, field):
    body = {key: value for key, value in HOOK.items() if key != field}
    response = client.post("/api/v1/webhooks", json=body)
    assert response.status_code == 422 and field in response.get_json()["errors"]
    assert row_counts(db, "webhooks") == {"webhooks": 0}


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b'"text"'])
def test_malformed_bodies_are_400(client, db, raw):
    response = client.post("/api/v1/webhooks", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert row_counts(db, "webhooks") == {"webhooks": 0}


def test_bad_ids_and_query_parameters_are_never_500(client):
    hook = create(client)["id"]
    unknown = uuid.uuid4()
    assert client.get(f"/api/v1/webhooks/{unknown}").status_code == 404
    assert client.get("/api/v1/webhooks/not-a-uuid").status_code == 404
    assert client.patch(f"/api/v1/webhooks/{unknown}", json={"active": True}).status_code == 404
    assert client.delete(f"/api/v1/webhooks/{unknown}").status_code == 404
    assert client.get(f"/api/v1/webhooks/{unknown}/deliveries").status_code == 404
    for query in ("status=lost", "limit=0", "limit=x", "cursor=garbage", "colour=blue"):
        response = client.get(f"/api/v1/webhooks/{hook}/deliveries?{query}")
        assert response.status_code == 422, query
    for query in ("active=maybe", "sort=url", "cursor=garbage"):
        assert client.get(f"/api/v1/webhooks?{query}").status_code == 422, query


# --- change and delete ---------------------------------------------------------------------


def test_a_patch_changes_what_it_names_and_honours_if_match(client):
    hook = create(client)["id"]
    response = client.patch(
        f"/api/v1/webhooks/{hook}", json={"event_types": ["*"]}, headers={"If-Match": '"1"'}
    )
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    body = response.get_json()
    assert body["event_types"] == ["*"] and body["url"] == HOOK["url"]
    assert "secret" not in body
    stale = client.patch(
        f"/api/v1/webhooks/{hook}", json={"active": False}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 409
    assert client.get(f"/api/v1/webhooks/{hook}").get_json()["active"] is True


@pytest.mark.parametrize(
    "body", [{"url": "http://example.com/"}, {"event_types": []}, {"id": str(uuid.uuid4())}]
)
def test_a_refused_patch_changes_nothing(client, body):
    hook = create(client)["id"]
    response = client.patch(f"/api/v1/webhooks/{hook}", json=body)
    assert response.status_code == 422
    shown = client.get(f"/api/v1/webhooks/{hook}").get_json()
    assert (shown["url"], shown["event_types"], shown["version"]) == (
        HOOK["url"],
        HOOK["event_types"],
        1,
    )


def test_enabling_a_disabled_webhook_starts_its_failure_count_over(client, db):
    hook = create(client)["id"]
    with db.session() as session:
        webhook = session.get(Webhook, hook)
        webhook.active, webhook.consecutive_failures, webhook.disabled_at = False, 5, utcnow()
    shown = client.get(f"/api/v1/webhooks/{hook}").get_json()
    assert shown["active"] is False and shown["disabled_at"] is not None
    body = client.patch(f"/api/v1/webhooks/{hook}", json={"active": True}).get_json()
    assert (body["active"], body["consecutive_failures"], body["disabled_at"]) == (True, 0, None)


def test_a_new_secret_can_be_set_but_is_not_shown(client, db):
    hook = create(client)["id"]
    response = client.patch(
        f"/api/v1/webhooks/{hook}", json={"secret": "rotated-secret-0123456789"}
    )
    assert response.status_code == 200 and "secret" not in response.get_json()
    with db.session() as session:
        assert session.get(Webhook, hook).secret == "rotated-secret-0123456789"


def test_deleting_a_webhook_deletes_its_deliveries(client, db):
    hook = create(client)["id"]
    fan_out(db)
    assert client.delete(f"/api/v1/webhooks/{hook}").status_code == 204
    assert client.get(f"/api/v1/webhooks/{hook}").status_code == 404
    assert row_counts(db, "webhooks", "webhook_deliveries") == {
        "webhooks": 0,
        "webhook_deliveries": 0,
    }


# --- deliveries and replay -----------------------------------------------------------------


def test_deliveries_are_listed_newest_first_with_their_attempts(client, db):
    hook = create(client)["id"]
    events = [fan_out(db, kind) for kind in ("deal.won", "ticket.created", "deal.won")]
    set_delivery(db, events[0], status="failed", attempts=6, last_status_code=500)
    first = client.get(f"/api/v1/webhooks/{hook}/deliveries?limit=2").get_json()
    cursor = first["next_cursor"]
    second = client.get(f"/api/v1/webhooks/{hook}/deliveries?limit=2&cursor={cursor}").get_json()
    items = first["items"] + second["items"]
    assert [item["event_id"] for item in items] == events[::-1]
    assert items[-1]["status"] == "failed" and items[-1]["attempts"] == 6
    assert items[-1]["last_status_code"] == 500 and "payload" not in items[-1]
    assert set(items[0]) >= {"delivered_at", "next_attempt_at", "last_error", "event_type"}
    failed = client.get(f"/api/v1/webhooks/{hook}/deliveries?status=failed").get_json()
    assert [item["event_id"] for item in failed["items"]] == [events[0]]
    tickets = client.get(f"/api/v1/webhooks/{hook}/deliveries?event_type=ticket.created")
    assert [item["event_id"] for item in tickets.get_json()["items"]] == [events[1]]


def test_one_delivery_shows_its_payload(client, db):
    hook = create(client)["id"]
    delivery = set_delivery(db, fan_out(db))
    body = client.get(f"/api/v1/webhooks/{hook}/deliveries/{delivery}").get_json()
    assert body["id"] == delivery and '"type":"deal.won"' in body["payload"]


def test_a_failed_delivery_is_replayed_now(client, db):
    hook = create(client)["id"]
    delivery = set_delivery(db, fan_out(db), status="failed", attempts=6, next_attempt_at=None)
    response = client.post(f"/api/v1/webhooks/{hook}/deliveries/{delivery}/replay")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["attempts"]) == ("pending", 0)
    assert body["next_attempt_at"] is not None
    again = client.post(f"/api/v1/webhooks/{hook}/deliveries/{delivery}/replay", json={})
    assert again.status_code == 409


def test_a_replay_of_an_unknown_or_foreign_delivery_is_404(client, db):
    hook = create(client)["id"]
    stranger = create(client, event_types=["contact.*"])["id"]
    delivery = set_delivery(db, fan_out(db), status="failed")
    path = f"/api/v1/webhooks/{stranger}/deliveries/{delivery}/replay"
    assert client.post(path).status_code == 404
    unknown = f"/api/v1/webhooks/{hook}/deliveries/{uuid.uuid4()}/replay"
    assert client.post(unknown).status_code == 404
    bad_body = client.post(f"/api/v1/webhooks/{hook}/deliveries/{delivery}/replay", json={"x": 1})
    assert bad_body.status_code == 422
    with db.session() as session:
        assert session.get(WebhookDelivery, delivery).status == "failed"
