"""The automations API: create, read, change and delete rules; every refusal; the shipped
rules; the run log."""

from __future__ import annotations

import uuid

import pytest

from services.marketing.automation_defaults import DEFAULT_RULES, install_default_rules
from services.marketing.models import AutomationRule
from services.marketing.tests.automation_helpers import (
    AUTOMATIONS,
    PROBLEM,
    conditions,
    contact_event,
    handle,
    new_rule,
    rule_body,
)
from services.marketing.tests.campaign_helpers import static_segment
from services.marketing.tests.conftest import row_counts, token_for


def test_a_rule_is_created_read_listed_changed_and_deleted(client):
    answer = client.post(AUTOMATIONS, json=rule_body(description="Say hello", delay_seconds=60))
    assert answer.status_code == 201
    body = answer.get_json()
    assert answer.headers["Location"] == f"{AUTOMATIONS}/{body['id']}"
    assert answer.headers["ETag"] == '"1"'
    assert body["trigger"] == {"event_type": "contact.created", "conditions": None}
    assert body["actions"] == [{"type": "send_template", "template": "welcome"}]
    assert body["action"] == body["actions"][0]
    assert (body["delay_seconds"], body["enabled"], body["version"]) == (60, True, 1)

    url = f"{AUTOMATIONS}/{body['id']}"
    assert client.get(url).get_json() == body
    listed = client.get(f"{AUTOMATIONS}?enabled=true").get_json()
    assert [item["id"] for item in listed["items"]] == [body["id"]]

    change = {"enabled": False, "actions": [{"type": "add_tag", "tags": ["new"]}]}
    changed = client.patch(url, json=change, headers={"If-Match": '"1"'})
    assert changed.status_code == 200 and changed.headers["ETag"] == '"2"'
    assert changed.get_json()["action"] == {"type": "add_tag", "tags": ["new"]}
    assert client.patch(url, json={"enabled": False}).get_json()["version"] == 2  # no change

    assert client.delete(url, headers={"If-Match": '"2"'}).status_code == 204
    assert client.get(url).status_code == 404


def test_every_action_and_an_inactivity_trigger_are_accepted(client, db):
    segment = static_segment(db, [])
    actions = [
        {"type": "send_template", "template": "offer", "variables": {"code": "SPRING"}},
        {"type": "add_tag", "tags": ["lapsed"]},
        {"type": "create_task", "title": "Call them", "due_in_days": 2},
        {"type": "add_to_list", "segment_id": segment},
        {"type": "notify_owner", "template": "owner-alert"},
    ]
    trigger = {"event_type": "contact.inactive", "inactive_days": 30}
    body = new_rule(client, trigger=trigger, actions=actions, action=None)
    assert body["actions"] == actions
    assert body["trigger"] == {
        "event_type": "contact.inactive",
        "conditions": None,
        "inactive_days": 30,
    }
    default_days = new_rule(client, trigger={"event_type": "contact.inactive"})
    assert default_days["trigger"]["inactive_days"] == 90


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"trigger": {"event_type": "deal.exploded"}}, "trigger"),
        ({"trigger": {"event_type": "deal.won", "inactive_days": 5}}, "trigger"),
        ({"trigger": {"event_type": "deal.won", "surprise": 1}}, "trigger"),
        ({"action": {"type": "fax"}}, "action"),
        ({"action": {"type": "send_template"}}, "action"),
        ({"action": {"type": "add_tag", "tags": []}}, "action"),
        ({"action": {"type": "create_task", "title": " "}}, "action"),
        ({"action": {"type": "add_to_list", "segment_id": "nope"}}, "action"),
        ({"action": "send a mail"}, "action"),
        ({"actions": []}, "actions"),
        ({"actions": [{"type": "add_tag", "tags": ["a"]}]}, "action"),  # both given
        ({"delay_seconds": -1}, "delay_seconds"),
        ({"delay_seconds": "60"}, "delay_seconds"),
        ({"name": ""}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_fields_are_a_422_naming_them(client, db, change, field):
    answer = client.post(AUTOMATIONS, json={**rule_body(), **change})
    assert answer.status_code == 422 and answer.mimetype == PROBLEM
    assert field in answer.get_json()["errors"]
    assert row_counts(db, "automation_rules")["automation_rules"] == len(DEFAULT_RULES)


def test_an_unknown_trigger_names_the_allowed_ones(client):
    answer = client.post(AUTOMATIONS, json=rule_body(trigger={"event_type": "deal.exploded"}))
    [message] = answer.get_json()["errors"]["trigger"]["event_type"]
    assert "contact.created" in message and "contact.inactive" in message


@pytest.mark.parametrize(
    ("event_type", "bad"),
    [
        ("deal.won", ("amount", "eq", 1)),  # neither data. nor contact.
        ("deal.won", ("contact.shoe_size", "eq", 1)),
        ("deal.won", ("contact.lifecycle_stage", "eq", "astronaut")),
        ("deal.won", ("contact.last_activity_at", "lt", "yesterday")),
        ("deal.won", ("data.amount", "gt", "lots")),
        ("deal.won", ("data.status", "exists", "yes")),
        ("deal.won", ("data.a.b.c.d.e.f", "eq", 1)),
        ("deal.won", ("data.status", "in", [])),
        ("contact.inactive", ("data.status", "eq", "open")),
    ],
)
def test_a_bad_condition_is_a_422_naming_its_filter(client, event_type, bad):
    good = ("contact.tags", "eq", "vip")
    trigger = {"event_type": event_type, "conditions": conditions(good, bad)}
    answer = client.post(AUTOMATIONS, json=rule_body(trigger=trigger))
    assert answer.status_code == 422
    errors = answer.get_json()["errors"]["trigger"]["conditions"]["filter_groups"]
    assert list(errors["0"]["filters"]) == ["1"]


def test_a_list_action_needs_a_static_segment_that_exists(client, db):
    missing = {"type": "add_to_list", "segment_id": str(uuid.uuid4())}
    answer = client.post(AUTOMATIONS, json=rule_body(action=missing))
    assert answer.status_code == 422
    assert "segment_id" in answer.get_json()["errors"]["actions"]["0"]
    dynamic = client.post(
        "/api/v1/segments",
        json={"name": "VIPs", "filter": conditions(("tags", "eq", "vip"))},
    ).get_json()
    answer = client.post(
        AUTOMATIONS, json=rule_body(action={"type": "add_to_list", "segment_id": dynamic["id"]})
    )
    assert answer.status_code == 422 and "static" in str(answer.get_json()["errors"])


def test_malformed_json_stale_versions_unknown_ids_and_roles_are_refused(app, client):
    bad = client.post(AUTOMATIONS, data="{nope", content_type="application/json")
    assert bad.status_code == 400 and bad.mimetype == PROBLEM
    rule = new_rule(client)
    url = f"{AUTOMATIONS}/{rule['id']}"
    stale = client.patch(url, json={"name": "Hi"}, headers={"If-Match": '"7"'})
    assert stale.status_code == 409 and stale.mimetype == PROBLEM
    assert client.delete(url, headers={"If-Match": '"7"'}).status_code == 409
    unknown = f"{AUTOMATIONS}/{uuid.uuid4()}"
    for answer in (
        client.get(unknown),
        client.patch(unknown, json={"name": "x"}),
        client.delete(unknown),
        client.get(f"{unknown}/runs"),
    ):
        assert answer.status_code == 404 and answer.mimetype == PROBLEM
    viewer = app.test_client()
    viewer.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app, 'viewer')}"
    assert viewer.get(url).status_code == 200
    assert viewer.post(AUTOMATIONS, json=rule_body()).status_code == 403
    assert viewer.patch(url, json={"enabled": False}).status_code == 403
    assert app.test_client().get(AUTOMATIONS).status_code == 401
    taken = client.post(AUTOMATIONS, json=rule_body(id=rule["id"]))
    assert taken.status_code == 409
    for query in ("limit=0", "limit=201", "cursor=zzz", "sort=colour", "event_type=x", "x=1"):
        assert client.get(f"{AUTOMATIONS}?{query}").status_code == 422, query
    assert client.get(f"{url}/runs?status=lost").status_code == 422


def test_an_idempotency_key_makes_one_rule(client, db):
    headers = {"Idempotency-Key": "welcome-rule"}
    first = client.post(AUTOMATIONS, json=rule_body(), headers=headers)
    again = client.post(AUTOMATIONS, json=rule_body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.get_json()["id"] == again.get_json()["id"]
    assert row_counts(db, "automation_rules")["automation_rules"] == len(DEFAULT_RULES) + 1


def test_the_shipped_rules_exist_disabled_and_stay_deleted(client, db):
    items = client.get(f"{AUTOMATIONS}?limit=200").get_json()["items"]
    shipped = {item["name"]: item for item in items}
    assert set(shipped) == {rule["name"] for rule in DEFAULT_RULES}
    assert not any(item["enabled"] for item in items)
    win_back = shipped["Win-back after 90 days"]
    assert win_back["trigger"]["inactive_days"] == 90
    assert win_back["action"] == {"type": "send_template", "template": "win-back"}
    sla = shipped["Tell the owner about an SLA breach of a customer with open deals"]
    assert sla["trigger"]["event_type"] == "ticket.sla_breached"
    assert sla["action"]["type"] == "notify_owner"
    assert client.get(f"{AUTOMATIONS}?enabled=false&q=welcome").get_json()["items"][0][
        "action"
    ] == {"type": "send_template", "template": "welcome"}

    client.delete(f"{AUTOMATIONS}/{win_back['id']}")
    with db.engine.begin() as connection:  # installing again adds only what was never there
        assert install_default_rules(connection, AutomationRule.__table__) == 1
    with db.engine.begin() as connection:
        assert install_default_rules(connection, AutomationRule.__table__) == 0


def test_the_run_log_is_paged_newest_first(app, client, db):
    rule = new_rule(client, trigger={"event_type": "contact.updated"})
    contact = str(uuid.uuid4())
    for version in range(1, 6):
        handle(app, contact_event("contact.updated", contact, version))
    url = f"{AUTOMATIONS}/{rule['id']}/runs"
    first = client.get(f"{url}?limit=3").get_json()
    second = client.get(f"{url}?limit=3&cursor={first['next_cursor']}").get_json()
    items = first["items"] + second["items"]
    assert len(items) == 5 and second["next_cursor"] is None
    created = [item["created_at"] for item in items]
    assert created == sorted(created, reverse=True)
    run = items[0]
    assert run["status"] == "done" and run["contact_id"] == contact
    assert run["actions_done"] == [{"type": "send_template", "status": "done"}]
    assert client.get(f"{url}?status=skipped").get_json()["items"] == []
