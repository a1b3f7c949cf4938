"""Customer reports: churn from a known stage history (reordered and redelivered events
counted once), customers at risk by inactivity and by breached tickets (from ticket.*
events as support publishes them), paging, and bad parameters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.marketing.handlers import handlers
from services.marketing.models import Contact
from shared.bus import PermanentError
from shared.events import utcnow
from shared.testing import handle_event, make_event, row_counts

CHURN = "/api/v1/reports/marketing/churn"
AT_RISK = "/api/v1/reports/marketing/at-risk"
PROBLEM = "application/problem+json"


@pytest.fixture
def apply(app: Any, db: Any) -> Any:
    """Every marketing handler of the event's type, in one transaction, as the consumer."""
    table = handlers(app.extensions["crm.settings"])

    def apply_event(event: Any) -> Any:
        handle_event(db, table, event)
        return event

    return apply_event


def day(month: int, number: int, year: int = 2026) -> datetime:
    return datetime(year, month, number, 12, tzinfo=UTC)


def staged(contact_id: str, version: int, stage: str, when: datetime, **data: Any) -> Any:
    """A contact.created/updated as the contacts service publishes it."""
    event_type = "contact.created" if version == 1 else "contact.updated"
    body = {"id": contact_id, "lifecycle_stage": stage, "version": version, **data}
    return make_event(
        event_type,
        body,
        "contacts",
        aggregate_id=contact_id,
        aggregate_version=version,
        occurred_at=when,
    )


def person() -> str:
    return str(uuid.uuid4())


# --- churn ----------------------------------------------------------------------------------


def known_history(apply: Any) -> None:
    """Five customers on 1 January 2026, two of whom churn in January (one twice)."""
    churned_in, stayed, before, after, late, flapping, erased = (person() for _ in range(7))
    late_churn = apply(staged(churned_in, 2, "churned", day(1, 15)))  # before its v1
    apply(staged(churned_in, 1, "customer", day(12, 1, 2025)))
    apply(late_churn)  # redelivered
    apply(staged(stayed, 1, "customer", day(11, 1, 2025)))
    apply(staged(before, 1, "customer", day(10, 1, 2025)))
    apply(staged(before, 2, "churned", day(12, 15, 2025)))
    apply(staged(after, 1, "customer", day(10, 1, 2025)))
    apply(staged(after, 2, "churned", day(2, 10)))
    apply(staged(late, 1, "lead", day(12, 1, 2025)))
    apply(staged(late, 2, "customer", day(1, 5)))
    apply(staged(late, 3, "churned", day(1, 20)))
    for version, (stage, when) in enumerate(
        [("customer", day(9, 1, 2025)), ("churned", day(1, 10)), ("customer", day(1, 12))], 1
    ):
        apply(staged(flapping, version, stage, when))
    apply(staged(flapping, 4, "churned", day(1, 25)))
    apply(staged(erased, 1, "customer", day(9, 1, 2025)))
    data = {"id": erased, "merged_ids": []}
    apply(
        make_event("contact.erased", data, "contacts", aggregate_id=erased, occurred_at=day(1, 5))
    )


def test_churn_counts_customers_at_the_start_who_churned_in_the_period(client, apply):
    known_history(apply)
    answer = client.get(CHURN, query_string={"from": "2026-01-01", "to": "2026-02-01"})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert (body["customers_at_start"], body["churned"], body["churn_rate"]) == (5, 2, "0.4000")
    assert body["from"].startswith("2026-01-01T00:00:00") and body["to"].startswith("2026-02-01")


def test_churn_of_a_later_period_and_of_a_period_without_customers(client, apply):
    known_history(apply)
    february = client.get(CHURN, query_string={"from": "2026-02-01T00:00:00Z", "to": "2026-03-01"})
    # At the start: the one who stayed, the one churning in February.
    assert february.get_json()["customers_at_start"] == 2
    assert february.get_json()["churned"] == 1 and february.get_json()["churn_rate"] == "0.5000"
    empty = client.get(CHURN, query_string={"from": "2020-01-01", "to": "2020-02-01"})
    assert empty.get_json() | {"from": None, "to": None} == {
        "from": None,
        "to": None,
        "customers_at_start": 0,
        "churned": 0,
        "churn_rate": None,
    }


def test_churn_defaults_to_the_last_30_days(client):
    body = client.get(CHURN).get_json()
    start = datetime.fromisoformat(body["from"])
    end = datetime.fromisoformat(body["to"])
    assert end - start == timedelta(days=30) and abs(utcnow() - end) < timedelta(minutes=1)


# --- customers at risk ----------------------------------------------------------------------


def customer(apply: Any, stage: str = "customer", days_ago: int | None = 200, **data: Any) -> str:
    contact_id = person()
    seen = utcnow() - timedelta(days=days_ago) if days_ago is not None else None
    fields = {
        "first_name": "Ada",
        "last_name": data.pop("last_name", "Lovelace"),
        "email": f"{contact_id[:8]}@example.com",
        "owner_id": data.pop("owner_id", None),
        "last_activity_at": seen.isoformat() if seen else None,
        "created_at": data.pop("created_at", None),
    }
    apply(staged(contact_id, 1, stage, utcnow() - timedelta(days=400), **fields))
    return contact_id


def ticket_event(
    event_type: str, ticket_id: str, contact_id: str, version: int, status: str, breached: bool
) -> Any:
    """A ticket.* event as support publishes it: the ticket as its API shows it."""
    data = {
        "id": ticket_id,
        "ticket_id": ticket_id,
        "contact_id": contact_id,
        "requester_email": None,
        "requester_name": None,
        "subject": "It is broken",
        "description": None,
        "channel": "web",
        "priority": "high",
        "status": status,
        "assignee_id": None,
        "tags": [],
        "first_response_due_at": "2026-11-01T10:00:00Z",
        "resolution_due_at": "2026-11-02T10:00:00Z",
        "sla_breached": breached,
        "version": version,
    }
    if event_type == "ticket.sla_breached":  # support's alert data: the ticket and target
        data = {key: data[key] for key in ("ticket_id", "contact_id", "status", "sla_breached")}
        data |= {"target": "resolution", "due_at": "2026-11-02T10:00:00Z", "priority": "high"}
    return make_event(
        event_type, data, "support", aggregate_id=ticket_id, aggregate_version=version
    )


def breached_counts(db: Any, *contact_ids: str) -> list[int]:
    with db.session() as session:
        return [session.get(Contact, one).tickets_breached for one in contact_ids]


def test_a_breached_ticket_counts_while_open(apply, db):
    someone = customer(apply, days_ago=1)
    ticket = person()
    apply(ticket_event("ticket.created", ticket, someone, 1, "new", False))
    assert breached_counts(db, someone) == [0]
    breach = apply(ticket_event("ticket.sla_breached", ticket, someone, 2, "open", True))
    assert breached_counts(db, someone) == [1]
    apply(ticket_event("ticket.resolved", ticket, someone, 3, "resolved", True))
    apply(breach)  # redelivered late
    assert breached_counts(db, someone) == [0]
    apply(ticket_event("ticket.reopened", ticket, someone, 4, "open", True))
    assert breached_counts(db, someone) == [1]


def test_a_ticket_event_with_a_bad_breach_flag_is_permanent(apply, db):
    someone = customer(apply, days_ago=1)
    event = ticket_event("ticket.created", person(), someone, 1, "open", False)
    event.data["sla_breached"] = "yes"
    before = row_counts(db, "contact_facts")
    with pytest.raises(PermanentError):
        apply(event)
    assert row_counts(db, "contact_facts") == before


def at_risk_world(apply: Any) -> dict[str, str]:
    """Customers inactive or with breached tickets, and some who are not at risk."""
    people = {
        "never_seen": customer(apply, days_ago=None, last_name="Never"),
        "idle": customer(apply, days_ago=200, owner_id=str(uuid.uuid4())),
        "idle_and_breached": customer(apply, days_ago=100),
        "breached": customer(apply, days_ago=10),
        "fine": customer(apply, days_ago=8),
        "lead": customer(apply, stage="lead", days_ago=300),
        "resolved": customer(apply, days_ago=3),
    }
    for name in ("idle_and_breached", "breached", "resolved"):
        ticket = person()
        apply(ticket_event("ticket.created", ticket, people[name], 1, "open", False))
        apply(ticket_event("ticket.sla_breached", ticket, people[name], 2, "open", True))
    resolved = ticket_event("ticket.resolved", ticket, people["resolved"], 3, "resolved", True)
    apply(resolved)
    return people


def test_at_risk_lists_inactive_customers_and_those_with_breached_tickets(client, apply):
    people = at_risk_world(apply)
    body = client.get(AT_RISK).get_json()
    assert body["inactive_days"] == 90 and body["next_cursor"] is None
    listed = [item["contact_id"] for item in body["items"]]
    order = ("never_seen", "idle", "idle_and_breached", "breached")
    assert listed == [people[name] for name in order]
    never, idle, both, breached = body["items"]
    assert never["reasons"] == ["inactive"] and never["days_inactive"] is None
    assert never["last_activity_at"] is None and never["name"] == "Ada Never"
    assert idle["days_inactive"] == 200 and idle["breached_tickets"] == 0
    assert idle["owner_id"] is not None and idle["email"].endswith("@example.com")
    assert both["reasons"] == ["inactive", "breached_tickets"] and both["breached_tickets"] == 1
    assert breached["reasons"] == ["breached_tickets"] and breached["days_inactive"] == 10


def test_at_risk_follows_inactive_days_and_pages(client, apply):
    people = at_risk_world(apply)
    first = client.get(AT_RISK, query_string={"inactive_days": "7", "limit": "3"}).get_json()
    assert len(first["items"]) == 3 and first["next_cursor"]
    query = {"inactive_days": "7", "limit": "3", "cursor": first["next_cursor"]}
    second = client.get(AT_RISK, query_string=query).get_json()
    assert second["next_cursor"] is None
    listed = [item["contact_id"] for item in first["items"] + second["items"]]
    order = ("never_seen", "idle", "idle_and_breached", "breached", "fine")
    assert listed == [people[name] for name in order]
    assert second["items"][-1]["reasons"] == ["inactive"]


def test_customers_created_recently_without_activity_are_not_inactive(client, apply):
    recent = (utcnow() - timedelta(days=5)).isoformat()
    customer(apply, days_ago=None, created_at=recent)
    assert client.get(AT_RISK).get_json()["items"] == []


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        (CHURN, {"from": "2026-02-01", "to": "2026-01-01"}, "to"),
        (CHURN, {"from": "2026-01-01", "to": "2026-01-01"}, "to"),
        (CHURN, {"from": "2026-01-01T00:00:00"}, "from"),
        (CHURN, {"from": "last week"}, "from"),
        (CHURN, {"to": "2026-13-01"}, "to"),
        (CHURN, {"from": "2000-01-01", "to": "2026-01-01"}, "to"),
        (CHURN, {"period": "month"}, "period"),
        (AT_RISK, {"inactive_days": "0"}, "inactive_days"),
        (AT_RISK, {"inactive_days": "many"}, "inactive_days"),
        (AT_RISK, {"limit": "201"}, "limit"),
        (AT_RISK, {"cursor": "not-a-cursor"}, "cursor"),
        (AT_RISK, {"stage": "customer"}, "stage"),
    ],
)
def test_bad_parameters_are_422_naming_them(client, path, query, field):
    answer = client.get(path, query_string=query)
    assert answer.status_code == 422 and answer.mimetype == PROBLEM
    assert field in answer.get_json()["errors"]


def test_every_role_reads_and_strangers_do_not(app, anonymous):
    from services.marketing.tests.conftest import token_for

    for role in ("viewer", "sales", "support", "marketing"):
        headers = {"Authorization": f"Bearer {token_for(app, role)}"}
        assert anonymous.get(AT_RISK, headers=headers).status_code == 200
        assert anonymous.get(CHURN, headers=headers).status_code == 200
    assert anonymous.get(CHURN).status_code == 401
