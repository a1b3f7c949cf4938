"""Marketing reports: the summary, the per-campaign report (its figures the same as each
campaign's own stats), engagement per day, week and month from the recipients' moments,
and bad parameters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from services.marketing import reports
from services.marketing.handlers import handlers
from services.marketing.models import CampaignRecipient, Contact
from services.marketing.tests.campaign_helpers import (
    CAMPAIGNS,
    add_contacts,
    fan_out,
    launch,
    new_campaign,
    requests,
    static_segment,
)
from shared.events import utcnow
from shared.testing import handle_event, make_event

SUMMARY = "/api/v1/reports/marketing"
BY_CAMPAIGN = "/api/v1/reports/marketing/campaigns"
ENGAGEMENT = "/api/v1/reports/marketing/engagement"
PROBLEM = "application/problem+json"


@pytest.fixture
def settings(app: Any) -> Any:
    return app.extensions["crm.settings"]


@pytest.fixture
def apply(db: Any, settings: Any) -> Any:
    """Apply an event with every marketing handler of its type, as the consumer does."""
    service_handlers = handlers(settings)
    return lambda event: handle_event(db, service_handlers, event)


def sent_campaign(client: Any, db: Any, settings: Any, people: list[str], name: str) -> Any:
    """A campaign fanned out to `people`: its id and its email requests by contact id."""
    campaign = new_campaign(client, static_segment(db, people, name), name=name)
    launch(client, campaign["id"])
    fan_out(db, settings)
    mails = {m["contact_id"]: m for m in requests(db) if m["campaign_id"] == campaign["id"]}
    return campaign["id"], mails


def outcome(event_type: str, mail: dict[str, Any], when: datetime | None = None) -> Any:
    """An email.* event as notifications publishes it about a campaign's message."""
    data = {
        "message_id": mail["message_id"],
        "contact_id": mail["contact_id"],
        "campaign_id": mail["campaign_id"],
        "category": "marketing",
        "status": event_type.split(".")[1],
    }
    return make_event(
        event_type,
        data,
        "notifications",
        aggregate_id=mail["message_id"],
        occurred_at=when or utcnow(),
    )


def unsubscribed(contact_id: str) -> Any:
    data = {
        "contact_id": contact_id,
        "list_id": None,
        "status": "unsubscribed",
        "previous_status": "subscribed",
        "source": "unsubscribe_link",
        "all_lists": True,
    }
    return make_event("subscription.changed", data, "marketing")


def two_campaigns(client: Any, db: Any, settings: Any, apply: Any) -> tuple[str, str]:
    """Spring (4 people: 3 sent, 2 opened, 1 clicked, 1 bounced, 1 unsubscribed) and
    Summer (2 people: 1 sent)."""
    people = add_contacts(db, 6)
    spring, mails = sent_campaign(client, db, settings, people[:4], "Spring")
    a, b, c, d = (mails[person] for person in people[:4])
    for event in (
        outcome("email.sent", a),
        outcome("email.opened", a),
        outcome("email.clicked", a),
        outcome("email.opened", b),  # proves delivery: sent too
        outcome("email.opened", b),  # a second open counts once
        outcome("email.sent", c),
        outcome("email.bounced", d),
    ):
        apply(event)
    apply(unsubscribed(people[2]))
    summer, mails = sent_campaign(client, db, settings, people[4:], "Summer")
    apply(outcome("email.sent", mails[people[4]]))
    return spring, summer


# --- per campaign and summary ---------------------------------------------------------------


def test_the_campaign_report_shows_each_campaigns_own_stats(client, db, settings, apply):
    spring, summer = two_campaigns(client, db, settings, apply)
    new_campaign(client, static_segment(db, add_contacts(db, 1, "draft"), "Draft"))
    body = client.get(BY_CAMPAIGN).get_json()
    assert [line["id"] for line in body["items"]] == [summer, spring]  # newest first
    for line in body["items"]:
        own = client.get(f"{CAMPAIGNS}/{line['id']}").get_json()
        assert line["stats"] == own["stats"]
        assert (line["name"], line["status"]) == (own["name"], own["status"])
    spring_stats = body["items"][1]["stats"]
    assert (spring_stats["sent"], spring_stats["opened"], spring_stats["clicked"]) == (3, 2, 1)
    assert (spring_stats["bounced"], spring_stats["unsubscribed"]) == (1, 1)
    assert spring_stats["open_rate"] == 0.6667 and spring_stats["bounce_rate"] == 0.25


def test_the_campaign_report_pages_and_filters_by_status(client, db, settings, apply):
    spring, summer = two_campaigns(client, db, settings, apply)
    draft = new_campaign(client, static_segment(db, add_contacts(db, 1, "draft"), "Draft"))
    first = client.get(BY_CAMPAIGN, query_string={"limit": "1"}).get_json()
    assert [line["id"] for line in first["items"]] == [summer] and first["next_cursor"]
    rest = client.get(BY_CAMPAIGN, query_string={"limit": "1", "cursor": first["next_cursor"]})
    assert [line["id"] for line in rest.get_json()["items"]] == [spring]
    drafts = client.get(BY_CAMPAIGN, query_string={"status": "draft"}).get_json()
    assert [line["id"] for line in drafts["items"]] == [draft["id"]]
    old = client.get(BY_CAMPAIGN, query_string={"from": "2020-01-01", "to": "2020-02-01"})
    assert old.get_json()["items"] == [] and old.get_json()["next_cursor"] is None


def test_the_summary_adds_up_the_campaigns_of_the_period(client, db, settings, apply):
    two_campaigns(client, db, settings, apply)
    customers = add_contacts(db, 3, "customer")
    with db.session() as session:
        for contact_id, amount, currency in zip(
            customers, ("100.00", "50.01", "70.00"), ("EUR", "EUR", None), strict=True
        ):
            contact = session.get(Contact, contact_id)
            contact.lifecycle_stage, contact.currency = "customer", currency
            contact.lifetime_value = amount
            contact.last_activity_at = utcnow() - timedelta(days=1)
    body = client.get(SUMMARY).get_json()
    assert body["campaigns_sent"] == 2 and body["recipients"] == 6
    assert (body["sent"], body["opened"], body["clicked"]) == (4, 2, 1)
    assert (body["requested"], body["bounced"], body["unsubscribed"]) == (6, 1, 1)
    assert body["open_rate"] == "0.5000" and body["click_rate"] == "0.2500"
    assert body["bounce_rate"] == "0.1667" and body["unsubscribe_rate"] == "0.2500"
    assert body["customers"] == 3 and body["at_risk"] == 0 and body["inactive_days"] == 90
    assert body["average_lifetime_value"] == [{"amount": "75.01", "currency": "EUR"}]
    assert body["churn_rate"] is None and body["customers_at_start"] == 0


def test_an_empty_summary_has_no_rates(client):
    body = client.get(SUMMARY, query_string={"from": "2020-01-01", "to": "2020-02-01"}).get_json()
    assert body["campaigns_sent"] == 0 and body["recipients"] == 0
    assert body["open_rate"] is None and body["churn_rate"] is None
    assert body["average_lifetime_value"] == []


# --- engagement over time -------------------------------------------------------------------


def test_engagement_counts_each_moment_in_its_day(client, db, settings, apply):
    people = add_contacts(db, 3)
    _, mails = sent_campaign(client, db, settings, people, "Daily")
    today = reports.bucket_start(utcnow(), "day")
    a, b, c = (mails[person] for person in people)
    for event in (
        outcome("email.sent", a, today - timedelta(days=2, hours=-1)),
        outcome("email.sent", b, today - timedelta(days=2, hours=-5)),
        outcome("email.opened", a, today - timedelta(days=1, hours=-3)),
        outcome("email.clicked", a, today - timedelta(hours=-1)),
        outcome("email.bounced", c, today - timedelta(days=2, hours=-2)),
    ):
        apply(event)
    apply(unsubscribed(people[1]))  # now: today
    query = {"from": (today - timedelta(days=3)).isoformat(), "to": (today + timedelta(days=1))}
    query["to"] = query["to"].isoformat()
    body = client.get(ENGAGEMENT, query_string=query).get_json()
    assert body["interval"] == "day" and len(body["buckets"]) == 4
    figures = [
        (b["sent"], b["opened"], b["clicked"], b["bounced"], b["unsubscribed"])
        for b in body["buckets"]
    ]
    assert figures == [(0, 0, 0, 0, 0), (2, 0, 0, 1, 0), (0, 1, 0, 0, 0), (0, 0, 1, 0, 1)]
    assert body["totals"] == {"sent": 2, "opened": 1, "clicked": 1, "bounced": 1, "unsubscribed": 1}
    assert datetime.fromisoformat(body["buckets"][1]["start"]) == today - timedelta(days=2)


def test_engagement_groups_many_recipients_by_week_and_month_in_sql(client, db):
    campaign = new_campaign(client, static_segment(db, add_contacts(db, 1), "Weekly"))
    start = datetime(2026, 3, 4, tzinfo=UTC)  # a Wednesday
    rows = [
        {
            "campaign_id": campaign["id"],
            "contact_id": str(uuid.uuid4()),
            "status": "sent",
            "sent_at": start + timedelta(hours=n),  # 2,000 emails over twelve weeks
            "opened_at": start + timedelta(hours=n) if n % 4 == 0 else None,
        }
        for n in range(0, 2000)
    ]
    with db.session() as session:
        session.execute(sa.insert(CampaignRecipient), rows)
    query = {"from": "2026-03-04", "to": "2026-03-20", "interval": "week"}
    weeks = client.get(ENGAGEMENT, query_string=query).get_json()["buckets"]
    assert [w["start"][:10] for w in weeks] == ["2026-03-04", "2026-03-09", "2026-03-16"]
    assert [w["sent"] for w in weeks] == [5 * 24, 7 * 24, 4 * 24]
    assert [w["opened"] for w in weeks] == [5 * 6, 7 * 6, 4 * 6]
    query = {"from": "2026-01-15", "to": "2026-06-01", "interval": "month"}
    months = client.get(ENGAGEMENT, query_string=query).get_json()
    assert [m["start"][:7] for m in months["buckets"]] == [
        "2026-01",
        "2026-02",
        "2026-03",
        "2026-04",
        "2026-05",
    ]
    assert months["totals"]["sent"] == 2000 and months["buckets"][2]["sent"] == 28 * 24


def test_bucket_bounds_follow_the_calendar():
    bounds = reports.bucket_bounds(
        datetime(2025, 12, 15, 6, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC), "month"
    )
    assert [b.date().isoformat() for b in bounds] == ["2025-12-15", "2026-01-01", "2026-02-01"]
    assert bounds[0].hour == 6


# --- bad parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        (SUMMARY, {"from": "2026-03-01", "to": "2026-02-01"}, "to"),
        (SUMMARY, {"inactive_days": "0"}, "inactive_days"),
        (SUMMARY, {"campaign": "x"}, "campaign"),
        (BY_CAMPAIGN, {"status": "lost"}, "status"),
        (BY_CAMPAIGN, {"limit": "500"}, "limit"),
        (BY_CAMPAIGN, {"to": "soon"}, "to"),
        (ENGAGEMENT, {"interval": "hour"}, "interval"),
        (ENGAGEMENT, {"from": "2024-01-01", "to": "2026-01-01", "interval": "day"}, "interval"),
        (ENGAGEMENT, {"from": "2026-02-01", "to": "2026-01-01"}, "to"),
        (ENGAGEMENT, {"from": "2026-01-01T00:00:00"}, "from"),
        (ENGAGEMENT, {"sort": "sent"}, "sort"),
    ],
)
def test_bad_parameters_are_422_naming_them(client, path, query, field):
    answer = client.get(path, query_string=query)
    assert answer.status_code == 422 and answer.mimetype == PROBLEM
    assert field in answer.get_json()["errors"]


def test_a_repeated_parameter_is_422(client):
    answer = client.get(f"{ENGAGEMENT}?interval=day&interval=week")
    assert answer.status_code == 422 and "interval" in answer.get_json()["errors"]


def test_a_viewer_reads_the_reports(app, anonymous):
    from services.marketing.tests.conftest import token_for

    headers = {"Authorization": f"Bearer {token_for(app, 'viewer')}"}
    for path in (SUMMARY, BY_CAMPAIGN, ENGAGEMENT):
        assert anonymous.get(path, headers=headers).status_code == 200
    assert anonymous.get(SUMMARY).status_code == 401
