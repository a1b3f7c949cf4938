"""'Assigned to you' notices: tickets, deals and leads, to the address the staff replica holds."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from services.notifications import assignments, notices
from services.notifications.models import Message, Template, UserAddress
from shared.testing import handle_event, make_event

AGENT = "00000000-0000-4000-8000-0000000000a1"
REP = "00000000-0000-4000-8000-0000000000a2"


@pytest.fixture
def apply(app: Any, db: Any) -> Any:
    handlers = assignments.handlers(app.extensions["crm.settings"])

    def apply_event(event: Any, times: int = 1) -> Any:
        for _ in range(times):
            handle_event(db, handlers, event)
        return event

    return apply_event


@pytest.fixture
def staff(db: Any) -> None:
    with db.session() as session:
        session.add(UserAddress(user_id=AGENT, email="agent@example.com", name="Sam", version=1))
        session.add(UserAddress(user_id=REP, email="rep@example.com", name="Rae", version=1))


def messages(db: Any) -> list[Message]:
    with db.session() as session:
        found = list(session.scalars(sa.select(Message).order_by(Message.created_at)))
        session.expunge_all()
        return found


def ticket_assigned(**fields: Any) -> Any:
    ticket_id = str(uuid.uuid4())
    data = {"id": ticket_id, "ticket_id": ticket_id, "subject": "Printer <on fire>"}
    data.update({"status": "open", "priority": "high", "assignee_id": AGENT, **fields})
    return make_event("ticket.assigned", data, "support", aggregate_id=ticket_id)


def deal_event(
    event_type: str = "deal.updated", changed: Any = ("owner_id",), **fields: Any
) -> Any:
    deal_id = str(uuid.uuid4())
    data = {"id": deal_id, "deal_id": deal_id, "name": "Navy compilers", "amount": "500.00"}
    data.update({"currency": "EUR", "status": "open", "owner_id": REP, **fields})
    if changed is not None:
        data["changed"] = list(changed)
    return make_event(event_type, data, "sales", aggregate_id=deal_id, aggregate_version=2)


def lead_event(changed: Any = ("owner_id",), **fields: Any) -> Any:
    lead_id = str(uuid.uuid4())
    data = {"id": lead_id, "first_name": "Grace", "last_name": "Hopper", "email": "g@navy.example"}
    data.update({"company_name": "Navy", "status": "new", "score": 40, "owner_id": REP})
    data.update(changed=list(changed), **fields)
    return make_event("lead.updated", data, "sales", aggregate_id=lead_id, aggregate_version=2)


def test_a_ticket_assignee_is_told_once_at_the_replicas_address(apply, db, staff):
    event = apply(ticket_assigned(), times=2)
    [message] = messages(db)
    assert message.id == notices.notice_message_id(event, assignments.TICKET_ASSIGNED)
    assert message.to_address == "agent@example.com" and "Hello Sam" in message.body_text
    assert message.subject.startswith("Assigned to you: Printer <on fire>")
    assert "Printer &lt;on fire&gt;" in message.body_html and "priority high" in message.body_text
    assert message.category == "transactional" and message.contact_id is None


def test_an_address_in_the_event_is_used_first(apply, db, staff):
    apply(ticket_assigned(assignee_email="other@example.com", assignee_name="Oz"))
    [message] = messages(db)
    assert message.to_address == "other@example.com" and "Hello Oz" in message.body_text


def test_an_assignee_nobody_knows_or_who_left_gets_nothing(apply, db, staff):
    with db.session() as session:
        session.get(UserAddress, AGENT).active = False
    apply(ticket_assigned())
    apply(ticket_assigned(assignee_id=str(uuid.uuid4())))
    apply(ticket_assigned(assignee_id=None))
    assert messages(db) == []


@pytest.mark.parametrize("event_type", ["deal.updated", "deal.stage_changed"])
def test_a_deals_new_owner_is_told(apply, db, staff, event_type):
    apply(deal_event(event_type, changed=["owner_id", "amount"]), times=2)
    [message] = messages(db)
    assert message.to_address == "rep@example.com"
    assert message.subject == "Deal assigned to you: Navy compilers"
    assert "Hello Rae" in message.body_text and "500.00 EUR" in message.body_text


def test_deal_changes_that_keep_the_owner_tell_no_one(apply, db, staff):
    apply(deal_event(changed=["amount"]))
    apply(deal_event(changed=None))
    apply(deal_event(changed=["owner_id"], owner_id=None))  # unassigned
    assert messages(db) == []


def test_a_leads_new_owner_is_told(apply, db, staff):
    apply(lead_event())
    [message] = messages(db)
    assert message.to_address == "rep@example.com"
    assert message.subject == "Lead assigned to you: Grace Hopper"
    assert "Grace Hopper (Navy), score 40" in message.body_text
    apply(lead_event(changed=["score"]))
    assert len(messages(db)) == 1


def test_a_stored_template_overrides_the_built_in_text(apply, db, staff):
    with db.session() as session:
        session.add(
            Template(
                id=str(uuid.uuid4()),
                name="deal_assigned",
                subject="Yours: {{ deal.name }}",
                body_text="{{ assignee.name }} owns {{ deal.name }}",
            )
        )
    apply(deal_event())
    [message] = messages(db)
    assert (message.subject, message.body_text) == (
        "Yours: Navy compilers",
        "Rae owns Navy compilers",
    )


def test_every_assignment_event_has_a_handler(app):
    handlers = assignments.handlers(app.extensions["crm.settings"])
    assert set(handlers) == {
        "ticket.assigned",
        "deal.updated",
        "deal.stage_changed",
        "lead.updated",
    }
