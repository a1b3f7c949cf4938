"""Converting a lead: the deal at once, the contact named for the contacts service."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from services.sales.pipelines import DEFAULT_PIPELINE_ID
from services.sales.tests.conftest import SALES_ID, row_counts, token_for
from services.sales.tests.test_leads_api import (
    UNKNOWN,
    assert_problem,
    move,
    new_lead,
    outbox_events,
)

TABLES = ("leads", "deals", "outbox", "deal_totals")


def convert(client: Any, lead: dict[str, Any], body: Any = None, **kwargs: Any) -> Any:
    return client.post(f"/api/v1/leads/{lead['id']}/convert", json=body, **kwargs)


def test_converting_a_lead_creates_the_deal_and_names_a_new_contact(client, db):
    lead = new_lead(
        client,
        first_name="Grace",
        last_name="Hopper",
        company_name="Navy",
        title="Admiral",
        phone="+1 555 0100",
        owner_id=SALES_ID,
    )
    move(client, lead, "qualified")
    response = client.post(f"/api/v1/leads/{lead['id']}/convert")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    contact_id, deal_id = body["contact_id"], body["deal_id"]
    assert uuid.UUID(contact_id) and uuid.UUID(deal_id)
    assert body["lead"]["status"] == "converted" and body["lead"]["converted_at"]
    assert body["lead"]["contact_id"] == contact_id and body["lead"]["deal_id"] == deal_id
    deal = client.get(f"/api/v1/deals/{deal_id}").get_json()
    assert deal["name"] == "Navy deal" and deal["lead_id"] == lead["id"]
    assert deal["contact_id"] == contact_id and deal["owner_id"] == SALES_ID
    assert deal["pipeline_id"] == DEFAULT_PIPELINE_ID and deal["status"] == "open"
    [event] = outbox_events(db, "lead.converted")
    data = event["data"]
    assert event["aggregate_id"] == lead["id"] and event["aggregate_version"] == 3
    assert (data["lead_id"], data["contact_id"], data["deal_id"]) == (
        lead["id"],
        contact_id,
        deal_id,
    )
    assert data["existing_contact"] is False
    for name in ("first_name", "last_name", "email", "phone", "title", "company_name"):
        assert data[name] == lead[name]
    assert data["owner_id"] == SALES_ID
    moved = outbox_events(db, "lead.status_changed")[-1]
    assert (moved["data"]["from"], moved["data"]["to"]) == ("qualified", "converted")
    assert [e["data"]["lead_id"] for e in outbox_events(db, "deal.created")] == [lead["id"]]


def test_converting_into_an_existing_contact_with_a_described_deal(client, db):
    lead = new_lead(client, company_name=None, first_name="Alan", last_name="Turing")
    contact_id = str(uuid.uuid4())
    stage = "5a1e5000-0000-4000-8000-000000000013"
    response = convert(
        client,
        lead,
        {
            "contact_id": contact_id,
            "deal": {
                "name": "Enigma",
                "amount": "1250.50",
                "currency": "GBP",
                "stage_id": stage,
                "expected_close_date": "2027-03-31",
            },
        },
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["contact_id"] == contact_id
    assert body["deal"]["name"] == "Enigma" and body["deal"]["amount"] == "1250.50"
    assert body["deal"]["currency"] == "GBP" and body["deal"]["stage_id"] == stage
    assert body["deal"]["expected_close_date"] == "2027-03-31"
    [event] = outbox_events(db, "lead.converted")
    assert event["data"]["contact_id"] == contact_id and event["data"]["existing_contact"] is True


def test_the_default_deal_name_falls_back_on_the_full_name(client):
    lead = new_lead(client, first_name="Alan", last_name="Turing")
    assert convert(client, lead, {}).get_json()["deal"]["name"] == "Alan Turing deal"


def test_converting_without_a_deal(client, db):
    lead = new_lead(client)
    response = convert(client, lead, {"create_deal": False})
    assert response.status_code == 200
    body = response.get_json()
    assert body["deal_id"] is None and body["deal"] is None and body["contact_id"]
    assert row_counts(db, "deals")["deals"] == 0
    assert outbox_events(db, "lead.converted")[0]["data"]["deal_id"] is None


def test_converting_a_lead_twice_is_refused(client, db):
    lead = new_lead(client)
    first = convert(client, lead, {}).get_json()
    before = row_counts(db, *TABLES)
    body = assert_problem(convert(client, lead, {}), 409)
    assert "already converted" in body["detail"]
    assert row_counts(db, *TABLES) == before
    assert client.get(f"/api/v1/leads/{lead['id']}").get_json()["deal_id"] == first["deal_id"]


def test_concurrent_conversions_make_one_deal(app, client, db):
    lead = new_lead(client)
    start = threading.Barrier(3)
    statuses: list[int] = []

    def attempt() -> None:
        caller = app.test_client()
        caller.environ_base["HTTP_AUTHORIZATION"] = client.environ_base["HTTP_AUTHORIZATION"]
        start.wait()
        statuses.append(convert(caller, lead, {}).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [200, 409, 409]
    assert row_counts(db, "deals")["deals"] == 1
    assert len(outbox_events(db, "lead.converted")) == 1


def test_an_unqualified_lead_cannot_be_converted(client, db):
    lead = new_lead(client)
    move(client, lead, "unqualified")
    before = row_counts(db, *TABLES)
    assert "unqualified" in assert_problem(convert(client, lead, {}), 409)["detail"]
    assert row_counts(db, *TABLES) == before


@pytest.mark.parametrize("status", ["new", "working", "qualified"])
def test_open_leads_of_every_status_convert(client, status):
    lead = new_lead(client)
    if status != "new":
        move(client, lead, status)
    assert convert(client, lead, {}).status_code == 200


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ("{broken", 400, None),
        ("[1]", 400, None),
        ('{"colour": "red"}', 422, "colour"),
        ('{"contact_id": "nope"}', 422, "contact_id"),
        ('{"create_deal": "maybe"}', 422, "create_deal"),
        ('{"create_deal": false, "deal": {"name": "X"}}', 422, "deal"),
        ('{"deal": {"colour": "red"}}', 422, "deal"),
        ('{"deal": {"amount": "-5"}}', 422, "deal"),
        ('{"deal": {"amount": 1.5e400}}', 422, "deal"),
        ('{"deal": {"currency": "euro"}}', 422, "deal"),
        ('{"deal": {"expected_close_date": "soon"}}', 422, "deal"),
        ('{"deal": {"pipeline_id": "' + UNKNOWN + '"}}', 422, "deal"),
        ('{"deal": {"stage_id": "' + UNKNOWN + '"}}', 422, "deal"),
    ],
)
def test_bad_convert_input_is_refused_and_changes_nothing(client, db, payload, status, field):
    lead = new_lead(client)
    before = row_counts(db, *TABLES)
    response = client.post(
        f"/api/v1/leads/{lead['id']}/convert", data=payload, content_type="application/json"
    )
    body = assert_problem(response, status)
    if field:
        assert field in body["errors"]
    assert row_counts(db, *TABLES) == before
    assert client.get(f"/api/v1/leads/{lead['id']}").get_json()["status"] == "new"


def test_a_stale_if_match_on_convert_is_409(client, db):
    lead = new_lead(client)
    before = row_counts(db, *TABLES)
    assert_problem(convert(client, lead, {}, headers={"If-Match": '"4"'}), 409)
    assert row_counts(db, *TABLES) == before
    assert convert(client, lead, {}, headers={"If-Match": '"1"'}).status_code == 200


def test_conversion_replays_its_answer_for_the_same_idempotency_key(client, db):
    lead = new_lead(client)
    headers = {"Idempotency-Key": f"convert-{lead['id']}"}
    first = convert(client, lead, {}, headers=headers)
    again = convert(client, lead, {}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert row_counts(db, "deals")["deals"] == 1


def test_converting_needs_the_sales_or_admin_role(app, anonymous, client, db):
    lead = new_lead(client, owner_id=SALES_ID)  # a sales user converts their own leads
    marketing = {"Authorization": f"Bearer {token_for(app, 'marketing', str(uuid.uuid4()))}"}
    before = row_counts(db, *TABLES)
    assert_problem(convert(anonymous, lead, {}, headers=marketing), 403)
    assert_problem(convert(anonymous, lead, {}), 401)
    assert row_counts(db, *TABLES) == before
    sales = {"Authorization": f"Bearer {token_for(app, 'sales', SALES_ID)}"}
    assert convert(anonymous, lead, {}, headers=sales).status_code == 200
