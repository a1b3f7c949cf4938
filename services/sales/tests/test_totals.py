"""The running deal totals stay equal to a rebuild through every API write, on both databases."""

from __future__ import annotations

import random
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from services.sales import totals
from services.sales.tests.api_helpers import (
    DEFAULT_PIPELINE,
    DEFAULT_STAGE_IDS,
    new_deal,
    new_pipeline,
)
from services.sales.tests.conftest import ADMIN_ID, SALES_ID

OWNERS = (ADMIN_ID, SALES_ID, None)
CURRENCIES = ("EUR", "USD", "GBP")
BASE = "/api/v1/deals"


def stored_totals(db: Any) -> list[tuple[str, str, str, str, int, Decimal]]:
    """The deal_totals rows, sorted, without zero rows."""
    table = db.metadata.tables["deal_totals"]
    with db.engine.connect() as connection:
        rows = connection.execute(sa.select(table)).all()
    return sorted(
        (
            r.stage_id,
            r.owner_key,
            r.currency,
            r.close_month,
            r.count,
            Decimal(r.amount_cents).scaleb(-2),
        )
        for r in rows
        if r.count
    )


def rebuilt_totals(db: Any) -> list[tuple[str, str, str, str, int, Decimal]]:
    with db.session() as session:
        totals.rebuild(session)
    return stored_totals(db)


def expected_totals(db: Any) -> list[tuple[str, str, str, str, int, Decimal]]:
    """What the totals must be, summed here in Python from the open deals."""
    table = db.metadata.tables["deals"]
    sums: dict[tuple[str, str, str, str], list[Any]] = defaultdict(lambda: [0, Decimal("0")])
    with db.engine.connect() as connection:
        deals = connection.execute(sa.select(table).where(table.c.status == "open")).all()
    for deal in deals:
        month = deal.expected_close_date.strftime("%Y-%m") if deal.expected_close_date else ""
        entry = sums[(deal.stage_id, deal.owner_id or "", deal.currency, month)]
        entry[0] += 1
        entry[1] += Decimal(deal.amount)
    return sorted((*key, count, amount) for key, (count, amount) in sums.items())


def test_the_totals_follow_one_deal_through_its_life(client, db):
    deal = new_deal(client, amount="100.00", expected_close_date="2026-03-15")
    key = (DEFAULT_STAGE_IDS[0], ADMIN_ID, "EUR", "2026-03")
    assert stored_totals(db) == [(*key, 1, Decimal("100.00"))]
    url = f"{BASE}/{deal['id']}"
    client.patch(url, json={"stage_id": DEFAULT_STAGE_IDS[1], "amount": "80.00"})
    assert stored_totals(db) == [(DEFAULT_STAGE_IDS[1], *key[1:], 1, Decimal("80.00"))]
    client.post(f"{url}/win")
    assert stored_totals(db) == []
    client.post(f"{url}/reopen")
    client.patch(url, json={"owner_id": None, "expected_close_date": None, "currency": "USD"})
    assert stored_totals(db) == [(DEFAULT_STAGE_IDS[1], "", "USD", "", 1, Decimal("80.00"))]
    client.delete(url)
    assert stored_totals(db) == []


class RandomSales:
    """Random deal writes through the API, each checked for the status it must answer."""

    def __init__(self, client: Any, rng: random.Random) -> None:
        self.client = client
        self.rng = rng
        self.deal_ids: list[str] = []
        self.pipelines = [DEFAULT_PIPELINE, new_pipeline(client, "Second", stages=4)["id"]]
        self.added = 0

    def stages_of(self, pipeline_id: str) -> list[str]:
        pipeline = self.client.get(f"/api/v1/pipelines/{pipeline_id}").get_json()
        return [stage["id"] for stage in pipeline["stages"]]

    def deal(self) -> dict[str, Any] | None:
        if not self.deal_ids:
            return None
        return self.client.get(f"{BASE}/{self.rng.choice(self.deal_ids)}").get_json()

    def fields(self) -> dict[str, Any]:
        rng = self.rng
        fields: dict[str, Any] = {}
        if rng.random() < 0.5:
            fields["amount"] = f"{rng.randint(0, 50_000)}.{rng.randint(0, 99):02d}"
        if rng.random() < 0.3:
            fields["currency"] = rng.choice(CURRENCIES)
        if rng.random() < 0.3:
            fields["owner_id"] = rng.choice(OWNERS)
        if rng.random() < 0.3:
            day = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            fields["expected_close_date"] = rng.choice([day, None])
        return fields

    def create(self) -> None:
        pipeline = self.rng.choice(self.pipelines)
        fields = {"pipeline_id": pipeline, "stage_id": self.rng.choice(self.stages_of(pipeline))}
        deal = new_deal(self.client, **fields, **self.fields())
        self.deal_ids.append(deal["id"])

    def change(self, deal: dict[str, Any]) -> None:
        changes = self.fields()
        if self.rng.random() < 0.5:
            pipeline = self.rng.choice(self.pipelines)
            changes["stage_id"] = self.rng.choice(self.stages_of(pipeline))
            changes["pipeline_id"] = pipeline
        moves = changes.get("stage_id", deal["stage_id"]) != deal["stage_id"]
        expected = 409 if moves and deal["status"] != "open" else 200
        response = self.client.patch(f"{BASE}/{deal['id']}", json=changes)
        assert response.status_code == expected, response.get_json()

    def batch_change(self, deal: dict[str, Any]) -> None:
        inputs = [{"id": deal["id"], **self.fields()}]
        response = self.client.post(f"{BASE}/batch/update", json={"inputs": inputs})
        assert response.status_code == 200, response.get_json()

    def close_or_reopen(self, deal: dict[str, Any]) -> None:
        url = f"{BASE}/{deal['id']}"
        if deal["status"] != "open":
            response = self.client.post(f"{url}/reopen")
        elif self.rng.random() < 0.5:
            response = self.client.post(f"{url}/win")
        else:
            response = self.client.post(f"{url}/lose", json={"reason": "Price"})
        assert response.status_code == 200, response.get_json()

    def delete(self, deal: dict[str, Any]) -> None:
        assert self.client.delete(f"{BASE}/{deal['id']}").status_code == 204
        self.deal_ids.remove(deal["id"])

    def delete_stage(self) -> None:
        """Delete a random stage of the second pipeline, moving its deals; then add one."""
        pipeline = self.pipelines[1]
        stages = self.stages_of(pipeline)
        doomed, target = self.rng.sample(stages, 2)
        url = f"/api/v1/pipelines/{pipeline}/stages/{doomed}?move_to={target}"
        assert self.client.delete(url).status_code == 204
        self.added += 1
        spec = {"name": f"Added {self.added}", "probability": self.rng.randint(0, 100)}
        assert (
            self.client.post(f"/api/v1/pipelines/{pipeline}/stages", json=spec).status_code == 201
        )

    def step(self) -> None:
        roll = self.rng.random()
        deal = self.deal()
        if deal is None or roll < 0.25:
            self.create()
        elif roll < 0.55:
            self.change(deal)
        elif roll < 0.62:
            self.batch_change(deal)
        elif roll < 0.82:
            self.close_or_reopen(deal)
        elif roll < 0.92:
            self.delete(deal)
        else:
            self.delete_stage()


@pytest.mark.parametrize("seed", [7, 42, 2026])
def test_random_api_writes_keep_the_totals_equal_to_a_rebuild(client, db, seed):
    sales = RandomSales(client, random.Random(seed))
    for step in range(150):
        sales.step()
        if step % 25 == 24:
            assert stored_totals(db) == expected_totals(db), f"step {step}"
    kept = stored_totals(db)
    assert kept, "the run should leave some open deals"
    assert kept == expected_totals(db)
    assert rebuilt_totals(db) == kept
