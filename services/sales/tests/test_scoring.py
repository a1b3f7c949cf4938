"""Lead scoring: rules and their operators, rescoring, behaviour, the threshold, breakdowns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.sales import scoring
from services.sales.models import Lead, ScoringRule
from services.sales.tests.conftest import row_counts, token_for
from services.sales.tests.test_leads_api import (
    UNKNOWN,
    assert_problem,
    move,
    new_lead,
    outbox_events,
)

RULES = "/api/v1/lead-scoring-rules"
SETTINGS = f"{RULES}/settings"
TABLES = ("scoring_rules", "leads", "outbox", "sales_settings")


def new_rule(client: Any, **fields: Any) -> dict[str, Any]:
    body = {"name": "VP", "field": "title", "operator": "contains", "value": "VP", "points": 20}
    body.update(fields)
    response = client.post(RULES, json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def lead_state(client: Any, lead: dict[str, Any]) -> dict[str, Any]:
    """The lead as read back, after checking its breakdown adds up to its score."""
    body = client.get(f"/api/v1/leads/{lead['id']}").get_json()
    breakdown = body["score_breakdown"]
    parts = sum(r["points"] for r in breakdown["rules"]) + sum(
        b["points"] for b in breakdown["behaviour"]
    )
    assert parts == breakdown["total"] == body["score"]
    assert body["score"] == body["rule_points"] + body["behaviour_points"]
    return body


def behave(db: Any, lead_id: str, kind: str, event_id: str | None = None) -> bool:
    with db.session() as session:
        lead = session.get(Lead, lead_id)
        return scoring.record_behaviour(session, lead, kind, event_id, datetime.now(UTC))


# --- rules CRUD ------------------------------------------------------------------------------


def test_scoring_rules_are_created_read_listed_changed_and_deleted(client):
    rule = new_rule(client)
    assert rule["active"] is True and rule["version"] == 1
    response = client.get(f"{RULES}/{rule['id']}")
    assert response.status_code == 200 and response.headers["ETag"] == '"1"'
    other = new_rule(client, name="Referral", field="source", operator="eq", value="referral")
    listed = client.get(f"{RULES}?sort=name").get_json()["items"]
    assert [item["name"] for item in listed] == ["Referral", "VP"]
    changed = client.patch(f"{RULES}/{rule['id']}", json={"points": 25, "active": False})
    assert changed.status_code == 200
    assert changed.get_json()["points"] == 25 and changed.get_json()["version"] == 2
    active = client.get(f"{RULES}?active=true").get_json()["items"]
    assert [item["id"] for item in active] == [other["id"]]
    stale = client.patch(f"{RULES}/{rule['id']}", json={"points": 1}, headers={"If-Match": '"1"'})
    assert_problem(stale, 409)
    assert client.delete(f"{RULES}/{rule['id']}").status_code == 204
    assert_problem(client.get(f"{RULES}/{rule['id']}"), 404)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"field": "shoe_size"}, "field"),
        ({"field": "custom_fields.Bad Name"}, "field"),
        ({"operator": "near"}, "operator"),
        ({"operator": "contains", "value": 5}, "value"),
        ({"operator": "contains", "value": ""}, "value"),
        ({"operator": "in", "value": []}, "value"),
        ({"operator": "in", "value": "a,b"}, "value"),
        ({"operator": "exists", "value": "yes"}, "value"),
        ({"operator": "gt", "value": "10"}, "value"),
        ({"operator": "gte", "value": True}, "value"),
        ({"operator": "eq", "value": None}, "value"),
        ({"operator": "is_free_mail", "value": None}, "operator"),
        ({"points": 1001}, "points"),
        ({"points": "5"}, "points"),
        ({"name": ""}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_rules_that_cannot_be_evaluated_are_422_and_change_nothing(client, db, changes, field):
    body = {"name": "R", "field": "title", "operator": "contains", "value": "VP", "points": 5}
    body.update(changes)
    before = row_counts(db, *TABLES)
    assert field in assert_problem(client.post(RULES, json=body), 422)["errors"]
    assert row_counts(db, *TABLES) == before


def test_a_rule_change_is_checked_against_the_whole_rule(client, db):
    rule = new_rule(client)
    before = row_counts(db, *TABLES)
    response = client.patch(f"{RULES}/{rule['id']}", json={"operator": "gt"})
    assert "value" in assert_problem(response, 422)["errors"]
    assert_problem(client.patch(f"{RULES}/{UNKNOWN}", json={"points": 1}), 404)
    assert_problem(client.delete(f"{RULES}/{UNKNOWN}"), 404)
    assert_problem(client.patch(f"{RULES}/{rule['id']}", data="{x", content_type="x/y"), 415)
    malformed = client.patch(f"{RULES}/{rule['id']}", data="{x", content_type="application/json")
    assert_problem(malformed, 400)
    assert row_counts(db, *TABLES) == before
    assert client.get(f"{RULES}/{rule['id']}").get_json()["version"] == 1


def test_changing_scoring_needs_the_sales_or_admin_role(app, anonymous, client, db):
    rule = new_rule(client)
    support = {"Authorization": f"Bearer {token_for(app, 'support', str(uuid.uuid4()))}"}
    before = row_counts(db, *TABLES)
    body = {"name": "R", "field": "title", "operator": "exists", "value": True, "points": 1}
    assert_problem(anonymous.post(RULES, json=body, headers=support), 403)
    assert_problem(anonymous.patch(f"{RULES}/{rule['id']}", json={}, headers=support), 403)
    assert_problem(anonymous.delete(f"{RULES}/{rule['id']}", headers=support), 403)
    put = anonymous.put(SETTINGS, json={"qualify_threshold": 1}, headers=support)
    assert_problem(put, 403)
    assert row_counts(db, *TABLES) == before
    assert anonymous.get(RULES, headers=support).status_code == 200
    assert anonymous.get(SETTINGS, headers=support).status_code == 200
    assert_problem(anonymous.get(RULES), 401)


# --- evaluation ------------------------------------------------------------------------------


def lead_with(**fields: Any) -> Lead:
    base = {"first_name": "", "last_name": "", "custom_fields": {}}
    return Lead(**{**base, **fields})


@pytest.mark.parametrize(
    ("lead", "field", "operator", "value", "matches"),
    [
        ({"title": "Senior VP Sales"}, "title", "contains", "vp", True),
        ({"title": "Engineer"}, "title", "contains", "VP", False),
        ({"title": None}, "title", "not_contains", "intern", True),
        ({"title": "Intern"}, "title", "not_contains", "INTERN", False),
        ({"source": "Referral"}, "source", "eq", "referral", True),
        ({"source": "web_form"}, "source", "neq", "referral", True),
        ({"company_name": None}, "company_name", "eq", "Acme", False),
        ({"company_name": "Acme Corp"}, "company_name", "starts_with", "acme", True),
        ({"website": "https://acme.io"}, "website", "ends_with", ".IO", True),
        ({"source": "event"}, "source", "in", ["Event", "referral"], True),
        ({"source": "ads"}, "source", "in", ["event", "referral"], False),
        ({"phone": "+1 555"}, "phone", "exists", True, True),
        ({"phone": ""}, "phone", "exists", True, False),
        ({"phone": None}, "phone", "exists", False, True),
        ({"email": "a@Gmail.com"}, "email_domain", "is_free_mail", True, True),
        ({"email": "a@acme.io"}, "email_domain", "is_free_mail", True, False),
        ({"email": "a@acme.io"}, "email", "is_free_mail", False, True),
        ({"email": None}, "email", "is_free_mail", True, False),
        ({"email": "ceo@acme.io"}, "email_domain", "eq", "ACME.io", True),
        ({"email": "ceo@acme.io"}, "email", "starts_with", "ceo@", True),
        ({"custom_fields": {"employees": 250}}, "custom_fields.employees", "gte", 250, True),
        ({"custom_fields": {"employees": "1200"}}, "custom_fields.employees", "gt", 1000, True),
        ({"custom_fields": {"employees": 10}}, "custom_fields.employees", "lt", 5.5, False),
        ({"custom_fields": {"employees": "many"}}, "custom_fields.employees", "lte", 9, False),
        ({"custom_fields": {}}, "custom_fields.employees", "gt", 0, False),
        ({"custom_fields": {"size": 50}}, "custom_fields.size", "eq", 50.0, True),
        ({"custom_fields": {"partner": True}}, "custom_fields.partner", "eq", True, True),
        ({"custom_fields": {"tags": ["a", "VIP"]}}, "custom_fields.tags", "eq", "vip", True),
        ({"custom_fields": {"tags": ["a"]}}, "custom_fields.tags", "neq", "vip", True),
    ],
)
def test_operators_match_as_documented(lead, field, operator, value, matches):
    rule = ScoringRule(name="r", field=field, operator=operator, value=value, points=1)
    assert scoring.rule_matches(rule, lead_with(**lead)) is matches


def test_the_example_rules_score_a_lead_and_explain_it(client, db):
    vp = new_rule(client)
    new_rule(client, name="Referral", field="source", operator="eq", value="referral", points=15)
    free_mail = {"field": "email_domain", "operator": "is_free_mail", "points": -10}
    new_rule(client, name="Free mail", **free_mail, value=None)
    lead = new_lead(client, title="VP Engineering", source="referral", email="vp@gmail.com")
    assert lead["score"] == 25 and lead["rule_points"] == 25
    body = lead_state(client, lead)
    names = [entry["name"] for entry in body["score_breakdown"]["rules"]]
    assert names == ["VP", "Referral", "Free mail"]
    assert body["score_breakdown"]["rules"][0] == {
        "rule_id": vp["id"],
        "name": "VP",
        "field": "title",
        "operator": "contains",
        "value": "VP",
        "points": 20,
    }
    score = client.get(f"/api/v1/leads/{lead['id']}/score")
    assert score.status_code == 200 and score.get_json() == body["score_breakdown"]
    changed = client.patch(f"/api/v1/leads/{lead['id']}", json={"title": "Engineer"})
    assert changed.get_json()["score"] == 5
    assert "score" in outbox_events(db, "lead.updated")[-1]["data"]["changed"]


def test_rule_changes_rescore_open_leads_and_leave_closed_ones_alone(client, db):
    open_lead = new_lead(client, title="VP Sales")
    closed = new_lead(client, title="VP Marketing")
    move(client, closed, "unqualified")
    response = client.post(
        RULES,
        json={"name": "VP", "field": "title", "operator": "contains", "value": "vp", "points": 20},
    )
    assert response.headers["X-Leads-Rescored"] == "1"
    rule = response.get_json()
    assert lead_state(client, open_lead)["score"] == 20
    assert lead_state(client, closed)["score"] == 0
    [updated] = [
        e for e in outbox_events(db, "lead.updated") if e["aggregate_id"] == open_lead["id"]
    ]
    assert updated["data"]["changed"] == ["rule_points", "score"]
    client.patch(f"{RULES}/{rule['id']}", json={"points": 30, "name": "Vice president"})
    body = lead_state(client, open_lead)
    assert body["score"] == 30
    assert body["score_breakdown"]["rules"][0]["name"] == "Vice president"
    client.patch(f"{RULES}/{rule['id']}", json={"active": False})
    assert lead_state(client, open_lead)["score"] == 0
    client.patch(f"{RULES}/{rule['id']}", json={"active": True})
    assert lead_state(client, open_lead)["score"] == 30
    deleted = client.delete(f"{RULES}/{rule['id']}")
    assert deleted.headers["X-Leads-Rescored"] == "1"
    assert lead_state(client, open_lead)["score"] == 0
    assert lead_state(client, closed)["score"] == 0


def test_a_closed_leads_breakdown_still_adds_up_after_rules_change(client):
    rule = new_rule(client)
    lead = new_lead(client, title="VP Sales")
    client.post(f"/api/v1/leads/{lead['id']}/convert", json={"create_deal": False})
    client.patch(f"{RULES}/{rule['id']}", json={"points": 50})
    body = lead_state(client, lead)
    assert body["score"] == 20 and body["score_breakdown"]["rules"][0]["points"] == 20


# --- settings, behaviour, threshold ----------------------------------------------------------


def test_settings_have_defaults_and_change_in_part(client, db):
    assert client.get(SETTINGS).get_json() == scoring.DEFAULT_SETTINGS
    response = client.put(SETTINGS, json={"behaviour_points": {"email_clicked": 7}})
    assert response.status_code == 200
    assert response.get_json() == {
        "qualify_threshold": 50,
        "behaviour_points": {"email_opened": 2, "email_clicked": 7, "form_submitted": 10},
    }
    client.put(SETTINGS, json={"qualify_threshold": 80})
    assert client.get(SETTINGS).get_json()["qualify_threshold"] == 80
    assert client.get(SETTINGS).get_json()["behaviour_points"]["email_clicked"] == 7


@pytest.mark.parametrize(
    "payload",
    [
        {"qualify_threshold": "50"},
        {"qualify_threshold": 0},
        {"behaviour_points": {"email_bounced": 3}},
        {"behaviour_points": {"email_opened": 5000}},
        {"colour": "red"},
    ],
)
def test_bad_settings_are_422_and_change_nothing(client, db, payload):
    before = row_counts(db, *TABLES)
    assert_problem(client.put(SETTINGS, json=payload), 422)
    assert row_counts(db, *TABLES) == before


def test_record_behaviour_counts_an_event_once(client, db):
    lead = new_lead(client)
    event_id = str(uuid.uuid4())
    assert behave(db, lead["id"], "email_opened", event_id) is True
    assert behave(db, lead["id"], "email_opened", event_id) is False
    assert behave(db, lead["id"], "email_clicked", str(uuid.uuid4())) is True
    assert behave(db, lead["id"], "email_clicked", None) is True
    body = lead_state(client, lead)
    assert body["behaviour_points"] == 2 + 5 + 5 and body["score"] == 12
    assert body["score_breakdown"]["behaviour"] == [
        {"kind": "email_opened", "count": 1, "points": 2},
        {"kind": "email_clicked", "count": 2, "points": 10},
    ]
    updates = outbox_events(db, "lead.updated")
    assert len(updates) == 3
    assert updates[0]["data"]["changed"] == ["behaviour_points", "score"]
    with pytest.raises(ValueError):
        behave(db, lead["id"], "email_liked", None)


def test_behaviour_on_a_converted_lead_does_not_count(client, db):
    lead = new_lead(client)
    client.post(f"/api/v1/leads/{lead['id']}/convert", json={"create_deal": False})
    assert behave(db, lead["id"], "email_clicked", str(uuid.uuid4())) is False
    assert lead_state(client, lead)["behaviour_points"] == 0


def test_crossing_the_threshold_qualifies_a_lead_once(client, db):
    client.put(SETTINGS, json={"qualify_threshold": 30})
    new_rule(client, points=20)
    lead = new_lead(client, title="VP")
    assert lead["status"] == "new" and lead["score"] == 20
    behave(db, lead["id"], "email_clicked", str(uuid.uuid4()))
    assert lead_state(client, lead)["status"] == "new"
    behave(db, lead["id"], "form_submitted", str(uuid.uuid4()))
    body = lead_state(client, lead)
    assert body["status"] == "qualified" and body["score"] == 35 and body["qualified_at"]
    behave(db, lead["id"], "email_clicked", str(uuid.uuid4()))
    [qualified] = outbox_events(db, "lead.qualified")
    assert qualified["data"]["reason"] == "score" and qualified["data"]["score"] == 35
    [moved] = outbox_events(db, "lead.status_changed")
    assert (moved["data"]["from"], moved["data"]["to"]) == ("new", "qualified")


def test_a_lead_created_above_the_threshold_is_qualified_at_creation(client, db):
    client.put(SETTINGS, json={"qualify_threshold": 15})
    new_rule(client, points=20)
    lead = new_lead(client, title="VP")
    assert lead["status"] == "qualified" and lead["qualified_at"]
    [qualified] = outbox_events(db, "lead.qualified")
    assert qualified["aggregate_id"] == lead["id"] and qualified["data"]["reason"] == "score"
    unqualified = new_lead(client, title="VP", status="unqualified")
    assert unqualified["status"] == "unqualified"


def test_staying_above_does_not_qualify_again_but_crossing_again_does(client, db):
    client.put(SETTINGS, json={"qualify_threshold": 20})
    rule = new_rule(client, points=20)
    lead = new_lead(client, title="VP")
    assert lead["status"] == "qualified"
    move(client, lead, "working")
    client.patch(f"/api/v1/leads/{lead['id']}", json={"phone": "+1 555 0100"})
    assert lead_state(client, lead)["status"] == "working"  # still above, no new crossing
    client.patch(f"{RULES}/{rule['id']}", json={"points": 10})
    assert lead_state(client, lead)["status"] == "working"
    client.patch(f"{RULES}/{rule['id']}", json={"points": 25})
    body = lead_state(client, lead)
    assert body["status"] == "qualified" and body["score"] == 25
    reasons = [e["data"]["reason"] for e in outbox_events(db, "lead.qualified")]
    assert reasons == ["score", "score"]


def test_a_patch_lifting_the_score_over_the_threshold_qualifies(client, db):
    client.put(SETTINGS, json={"qualify_threshold": 20})
    new_rule(client, points=20)
    lead = new_lead(client, title="Engineer")
    move(client, lead, "working")
    body = client.patch(f"/api/v1/leads/{lead['id']}", json={"title": "VP"}).get_json()
    assert body["status"] == "qualified" and body["score"] == 20
    updated = outbox_events(db, "lead.updated")[-1]
    assert {"title", "rule_points", "score", "status"} <= set(updated["data"]["changed"])


def test_deleting_a_lead_removes_its_behaviour(client, db):
    lead = new_lead(client)
    behave(db, lead["id"], "email_opened", str(uuid.uuid4()))
    assert client.delete(f"/api/v1/leads/{lead['id']}").status_code == 204
    assert row_counts(db, "lead_behaviours")["lead_behaviours"] == 0
