"""Automations fired by events: once per event, conditions on the event and the contact,
what each action publishes, consent at run time, disabled rules, the open-deals fact."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa

from services.marketing import suppressions
from services.marketing.automation_defaults import DEFAULT_RULES
from services.marketing.ledger import Origin
from services.marketing.models import Contact, SegmentMember
from services.marketing.tests.automation_helpers import (
    AUTOMATIONS,
    OWNER,
    conditions,
    contact_event,
    handle,
    new_contact,
    new_rule,
    published,
    runs,
)
from services.marketing.tests.campaign_helpers import static_segment
from services.marketing.tests.consent_helpers import SUBSCRIPTIONS
from shared.events import utcnow
from shared.testing import make_event


def deal_event(event_type: str, contact_id: str, version: int, **fields) -> object:
    deal_id = fields.pop("id", "00000000-0000-4000-8000-0000000000d1")
    data = {"id": deal_id, "contact_id": contact_id, "status": "open", **fields}
    return make_event(event_type, data, "sales", aggregate_id=deal_id, aggregate_version=version)


def ticket_event(event_type: str, contact_id: str | None, version: int = 1, **fields) -> object:
    ticket_id = fields.pop("id", str(uuid.uuid4()))
    data = {"id": ticket_id, "contact_id": contact_id, "status": "open", **fields}
    return make_event(
        event_type, data, "support", aggregate_id=ticket_id, aggregate_version=version
    )


def test_a_rule_fires_once_per_event_however_often_it_comes(app, client, db):
    rule = new_rule(client)
    ada = str(uuid.uuid4())
    created = contact_event("contact.created", ada, first_name="Ada")
    handle(app, created)
    handle(app, created)  # redelivered
    [run] = runs(db, rule["id"])
    assert (run.status, run.trigger_key, run.contact_id) == ("done", created.id, ada)
    [mail] = published(db, "email.requested")
    data = mail["data"]
    assert mail["aggregate_id"] == ada
    assert (data["to"], data["contact_id"], data["template"]) == ("ada@example.com", ada, "welcome")
    assert data["category"] == "marketing" and data["automation_id"] == rule["id"]
    assert data["message_id"] == str(uuid.uuid5(uuid.UUID(run.id), "0:email"))
    assert data["variables"]["contact"]["name"] == "Ada Lovelace"
    assert data["headers"]["List-Unsubscribe"] == f"<{data['variables']['unsubscribe_url']}>"
    handle(app, contact_event("contact.created", str(uuid.uuid4())))  # another contact: again
    assert len(runs(db, rule["id"])) == 2


def test_disabled_rules_and_the_shipped_ones_do_not_fire(app, client, db):
    new_rule(client, enabled=False)
    handle(app, contact_event("contact.created", str(uuid.uuid4())))
    assert runs(db) == [] and published(db, "email.requested") == []
    items = client.get(AUTOMATIONS).get_json()["items"]
    assert len(items) == len(DEFAULT_RULES) + 1 and not any(item["enabled"] for item in items)


def test_conditions_on_the_event_data(app, client, db):
    ada = new_contact(app)
    filters = conditions(("data.amount", "gte", 1000), ("data.value.currency", "eq", "EUR"))
    trigger = {"event_type": "deal.won", "conditions": filters}
    rule = new_rule(client, trigger=trigger, action={"type": "add_tag", "tags": ["big"]})
    eur = {"amount": "1250.00", "currency": "EUR"}
    small = deal_event("deal.won", ada, 2, id=str(uuid.uuid4()), amount="99.00", value=eur)
    dollars = {**eur, "currency": "USD"}
    in_usd = deal_event("deal.won", ada, 2, id=str(uuid.uuid4()), amount="5000", value=dollars)
    big = deal_event("deal.won", ada, 2, id=str(uuid.uuid4()), amount="1250.00", value=eur)
    for event in (small, in_usd, big):
        handle(app, event)
    [run] = runs(db, rule["id"])
    assert run.trigger_key == big.id
    [tagging] = published(db, "contact.tag_requested")
    assert tagging["data"]["contact_id"] == ada and tagging["data"]["tags"] == ["big"]


def test_conditions_on_the_contact_see_the_replica_as_the_event_left_it(app, client, db):
    vip_or_gold = {
        "filter_groups": [
            {"filters": [{"field": "contact.tags", "operator": "eq", "value": "vip"}]},
            {
                "filters": [
                    {"field": "contact.custom_fields.plan", "operator": "eq", "value": "gold"},
                    {"field": "contact.lifecycle_stage", "operator": "eq", "value": "customer"},
                ]
            },
        ]
    }
    trigger = {"event_type": "contact.updated", "conditions": vip_or_gold}
    rule = new_rule(client, trigger=trigger)
    vip, gold, plain = (str(uuid.uuid4()) for _ in range(3))
    handle(app, contact_event("contact.updated", vip, tags=["VIP"]))
    handle(app, contact_event("contact.updated", plain, custom_fields={"plan": "gold"}))
    customer = {"plan": "gold"}
    handle(
        app,
        contact_event("contact.updated", gold, lifecycle_stage="customer", custom_fields=customer),
    )
    assert sorted(run.contact_id for run in runs(db, rule["id"])) == sorted([vip, gold])


def test_each_action_publishes_its_request_once(app, client, db):
    ada = new_contact(app)
    segment = static_segment(db, [])
    actions = [
        {"type": "add_tag", "tags": ["Needs-Care"]},
        {"type": "create_task", "title": "Call about the ticket", "due_in_days": 3},
        {"type": "add_to_list", "segment_id": segment},
        {"type": "notify_owner", "template": "ticket-alert", "variables": {"urgent": True}},
    ]
    rule = new_rule(client, trigger={"event_type": "ticket.created"}, actions=actions, action=None)
    opened = ticket_event("ticket.created", ada)
    before = utcnow()
    handle(app, opened)
    handle(app, opened)
    [run] = runs(db, rule["id"])
    assert run.status == "done" and [o["status"] for o in run.actions_done] == ["done"] * 4
    [tagging] = published(db, "contact.tag_requested")
    assert tagging["data"]["tags"] == ["Needs-Care"] and tagging["aggregate_id"] == ada
    [task] = published(db, "task.requested")
    data = task["data"]
    assert data["task_id"] == str(uuid.uuid5(uuid.UUID(run.id), "1:task"))
    assert (data["contact_id"], data["owner_id"], data["title"]) == (
        ada,
        OWNER,
        "Call about the ticket",
    )
    due = datetime.fromisoformat(data["due_at"].replace("Z", "+00:00"))
    assert timedelta(days=3) <= due - before < timedelta(days=3, minutes=1)
    with db.session() as session:
        assert session.get(SegmentMember, (segment, ada)) is not None
    [note] = published(db, "email.requested")
    mail = note["data"]
    assert mail["to_user_id"] == OWNER and mail["category"] == "transactional"
    assert "contact_id" not in mail and "to" not in mail
    assert mail["template"] == "ticket-alert" and mail["variables"]["urgent"] is True
    assert mail["variables"]["contact"]["id"] == ada


def test_a_contact_unsubscribed_or_suppressed_gets_no_template(app, client, db):
    left, suppressed, erased_address, no_email = (
        new_contact(app, email=f"{name}@example.com") for name in ("left", "sup", "gone", "x")
    )
    with db.session() as session:
        session.execute(sa.update(Contact).where(Contact.id == no_email).values(email=None))
    client.post(SUBSCRIPTIONS, json={"contact_id": left, "status": "unsubscribed"})
    client.post("/api/v1/suppressions", json={"email": "SUP@example.com"})
    with db.session() as session:
        suppressions.suppress(session, "gone@example.com", suppressions.ERASED, Origin("erasure"))
    actions = [{"type": "send_template", "template": "offer"}, {"type": "notify_owner"}]
    actions[1]["template"] = "owner-alert"
    rule = new_rule(client, trigger={"event_type": "email.clicked"}, actions=actions, action=None)
    for contact_id in (left, suppressed, erased_address, no_email):
        handle(app, make_event("email.clicked", {"contact_id": contact_id}, "notifications"))
    found = {run.contact_id: run for run in runs(db, rule["id"])}
    assert len(found) == 4
    for contact_id in (left, suppressed, erased_address):
        assert found[contact_id].actions_done[0]["detail"] == (
            "The contact is unsubscribed or suppressed."
        )
    assert found[no_email].actions_done[0]["status"] == "skipped"
    sent = [mail["data"] for mail in published(db, "email.requested")]
    assert all(data["category"] == "transactional" for data in sent) and len(sent) == 4


def test_a_run_without_anything_to_do_is_skipped_with_the_reason(app, client, db):
    ada = new_contact(app, owner_id=None)
    action = {"type": "notify_owner", "template": "owner-alert"}
    rule = new_rule(client, trigger={"event_type": "ticket.resolved"}, action=action)
    handle(app, ticket_event("ticket.resolved", ada, status="resolved"))
    handle(app, ticket_event("ticket.resolved", None, status="resolved"))
    [run] = runs(db, rule["id"])  # the event naming no contact fired nothing
    assert (run.status, run.reason) == ("skipped", "The contact has no owner.")
    assert published(db, "email.requested") == []


def test_the_shipped_sla_rule_tells_the_owner_of_a_customer_with_open_deals(app, client, db):
    ada = new_contact(app)
    [sla] = [rule for rule in DEFAULT_RULES if rule["event_type"] == "ticket.sla_breached"]
    client.patch(f"{AUTOMATIONS}/{sla['id']}", json={"enabled": True})
    handle(app, ticket_event("ticket.sla_breached", ada, sla_breached=True))
    assert runs(db) == []  # no open deal yet
    handle(app, deal_event("deal.created", ada, 1))
    with db.session() as session:
        assert session.get(Contact, ada).deals_open == 1
    handle(app, ticket_event("ticket.sla_breached", ada, sla_breached=True))
    [run] = runs(db, sla["id"])
    [mail] = published(db, "email.requested")
    assert mail["data"]["to_user_id"] == OWNER and run.status == "done"
    handle(app, deal_event("deal.won", ada, 2, status="won"))
    with db.session() as session:
        assert session.get(Contact, ada).deals_open == 0
    handle(app, ticket_event("ticket.sla_breached", ada, sla_breached=True))
    assert len(runs(db, sla["id"])) == 1
