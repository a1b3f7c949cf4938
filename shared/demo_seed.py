"""`crm seed --demo`: a believable demo dataset in every service, made through the gateway API.

Deterministic: a fixed random seed picks the names and numbers, and every record is created
with an id derived from its place in the dataset (uuid5). A second run meets its own records
(409), reads them back and skips them; the follow-ups that change a record (converting a
lead, winning a deal, moving a ticket, launching a campaign) run only for records this run
made, so running twice adds nothing and fails on nothing.
"""

from __future__ import annotations

import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests

from shared import demo_data as data
from shared.cli_tools import HTTP_TIMEOUT, problem_text

RANDOM_SEED = 20261130
NAMESPACE = uuid.UUID("0c5d9a52-6f1e-4d1b-9a3e-5b7f2d8c4e61")  # the seeder's ids: uuid5 of it
REPLICA_WAIT_SECONDS = 60.0  # how long marketing may take to learn of the new contacts
TICKET_PATHS = {  # the status moves that take a new ticket to each status
    "new": (),
    "open": ("open",),
    "pending": ("open", "pending"),
    "resolved": ("open", "resolved"),
    "closed": ("open", "resolved", "closed"),
}


def seed_id(kind: str, key: object) -> str:
    """The id of one record of the dataset: the same on every run."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}/{key}"))


@dataclass
class SeedClient:
    """The gateway API as the seeder uses it: timeouts, 429 waited out, 409 as "exists"."""

    session: requests.Session
    api: str
    tally: Counter[tuple[str, str]] = field(default_factory=Counter)
    fresh: set[str] = field(default_factory=set)  # ids this run created

    def request(self, method: str, path: str, body: Any = None) -> requests.Response:
        for _attempt in range(5):
            answer = self.session.request(
                method, f"{self.api}{path}", json=body, timeout=HTTP_TIMEOUT
            )
            if answer.status_code != 429:
                return answer
            time.sleep(min(float(answer.headers.get("Retry-After", "1")), 30.0))
        return answer

    def get(self, path: str) -> dict[str, Any] | None:
        answer = self.request("GET", path)
        return answer.json() if answer.status_code == 200 else None

    def create(self, kind: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST a record with its seed id; the stored record if it exists; None if refused."""
        answer = self.request("POST", path, body)
        if answer.status_code in (200, 201):
            self.tally[kind, "created"] += 1
            self.fresh.add(body["id"])
            return answer.json()
        existing = self.get(f"{path}/{body['id']}") if answer.status_code == 409 else None
        if existing is not None:
            self.tally[kind, "already there"] += 1
            return existing
        self.refused(kind, "POST", path, answer)
        return None

    def act(self, kind: str, method: str, path: str, body: Any = None) -> dict[str, Any] | None:
        """A follow-up (an action, a comment, a change): counted as done or failed."""
        answer = self.request(method, path, body)
        if answer.status_code < 300:
            self.tally[kind, "done"] += 1
            return answer.json() if answer.content else {}
        self.refused(kind, method, path, answer)
        return None

    def refused(self, kind: str, method: str, path: str, answer: requests.Response) -> None:
        self.tally[kind, "failed"] += 1
        sys.stderr.write(f"warning: {method} {path}: {problem_text(answer)}\n")

    def is_new(self, record: dict[str, Any] | None) -> bool:
        return record is not None and record["id"] in self.fresh


def summary_lines(tally: Counter[tuple[str, str]]) -> list[str]:
    """One line per kind of object: how many were created, found, done or refused."""
    kinds = list(dict.fromkeys(kind for kind, _outcome in tally))
    outcomes = ("created", "already there", "done", "failed")
    return [
        f"{kind}: "
        + ", ".join(
            f"{tally[kind, outcome]} {outcome}" for outcome in outcomes if tally[kind, outcome]
        )
        for kind in kinds
    ]


def failures(tally: Counter[tuple[str, str]]) -> int:
    """How many calls the API refused (each was told on stderr)."""
    return sum(count for (_kind, outcome), count in tally.items() if outcome == "failed")


def seed_demo(client: SeedClient) -> list[str]:
    """Make the whole dataset; the summary, one line per kind of object (client.tally)."""
    rng = random.Random(RANDOM_SEED)
    companies = seed_companies(client)
    contacts = seed_contacts(client, rng, companies)
    seed_leads(client, rng)
    deals = seed_deals(client, rng, contacts, companies)
    seed_tasks(client, rng, deals)
    seed_tickets(client, rng, contacts)
    seed_marketing(client, contacts)
    return summary_lines(client.tally)


# --- contacts ------------------------------------------------------------------------------


def seed_companies(client: SeedClient) -> list[dict[str, Any]]:
    made = []
    for index, (name, domain, industry, size) in enumerate(data.COMPANIES):
        body = {"id": seed_id("company", index), "name": name, "domain": domain}
        body.update(industry=industry, size=size, website=f"https://www.{domain}")
        made.append(client.create("companies", "/companies", body))
    return [company for company in made if company is not None]


def people(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """`count` different first and last name pairs."""
    pairs = [(first, last) for first in data.FIRST_NAMES for last in data.LAST_NAMES]
    return rng.sample(pairs, count)


def contact_body(
    rng: random.Random, index: int, name: tuple[str, str], company: dict[str, Any]
) -> dict[str, Any]:
    first, last = name
    stages, weights = zip(*data.LIFECYCLE_STAGES, strict=True)
    tags = rng.sample(data.TAGS, rng.randint(0, 2))
    if index % 2 == 0:
        tags.append(data.NEWSLETTER_TAG)
    return {
        "id": seed_id("contact", index),
        "first_name": first,
        "last_name": last,
        "email": f"{first}.{last}@{company['domain']}".lower(),
        "phone": f"+44 20 7946 {index:04d}",
        "company_id": company["id"],
        "title": rng.choice(data.TITLES),
        "lifecycle_stage": rng.choices(stages, weights)[0],
        "tags": tags,
    }


def seed_contacts(
    client: SeedClient, rng: random.Random, companies: list[dict[str, Any]], count: int = 40
) -> list[dict[str, Any]]:
    if not companies:
        return []
    made = []
    for index, name in enumerate(people(rng, count)):
        body = contact_body(rng, index, name, companies[index % len(companies)])
        made.append(client.create("contacts", "/contacts", body))
    return [contact for contact in made if contact is not None]


# --- sales ---------------------------------------------------------------------------------


def seed_leads(client: SeedClient, rng: random.Random) -> None:
    """Fifteen leads in every open status; four of the qualified ones converted."""
    statuses = ["qualified"] * 6 + ["working"] * 3 + ["unqualified"] * 2 + ["new"] * 4
    for index, (first, last) in enumerate(people(rng, len(statuses))):
        company, domain = data.PROSPECTS[index % len(data.PROSPECTS)]
        body = {
            "id": seed_id("lead", index),
            "first_name": first,
            "last_name": last,
            "email": f"{first}.{last}@{domain}".lower(),
            "company_name": company,
            "source": rng.choice(data.LEAD_SOURCES),
            "status": statuses[index],
        }
        if statuses[index] == "unqualified":
            body["unqualified_reason"] = rng.choice(data.UNQUALIFIED_REASONS)
        lead = client.create("leads", "/leads", body)
        if index < 4 and client.is_new(lead):  # the first four become customers
            deal = {"name": f"{company} – first order", "amount": "12000.00", "currency": "EUR"}
            client.act("leads converted", "POST", f"/leads/{lead['id']}/convert", {"deal": deal})


def default_stages(client: SeedClient) -> list[dict[str, Any]]:
    pipelines = (client.get("/pipelines") or {}).get("items", [])
    default = next((p for p in pipelines if p.get("is_default")), None)
    return default["stages"] if default else []


def deal_body(
    rng: random.Random, key: str, contact: dict[str, Any], stage: dict[str, Any], company: str
) -> dict[str, Any]:
    return {
        "id": seed_id("deal", key),
        "name": f"{company} – {rng.choice(data.PRODUCTS)}",
        "contact_id": contact["id"],
        "company_id": contact["company_id"],
        "pipeline_id": stage["pipeline_id"],
        "stage_id": stage["id"],
        "amount": f"{rng.randrange(2_000, 90_000, 250)}.00",
        "currency": "EUR",
        "expected_close_date": (date.today() + timedelta(days=rng.randint(5, 120))).isoformat(),
    }


def seed_deals(
    client: SeedClient,
    rng: random.Random,
    contacts: list[dict[str, Any]],
    companies: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Two open deals in every stage of the default pipeline, three won, two lost."""
    stages = default_stages(client)
    if not stages or not contacts:
        return []
    plan = [(f"{s['name']}-{n}", s, "open") for s in stages for n in range(2)]
    plan += [(f"won-{n}", stages[-1], "won") for n in range(3)]
    plan += [(f"lost-{n}", stages[len(stages) // 2], "lost") for n in range(2)]
    company_names = {company["id"]: company["name"] for company in companies}
    open_deals = []
    for key, stage, outcome in plan:
        contact = rng.choice(contacts)
        company = company_names.get(contact["company_id"], contact["last_name"])
        deal = client.create("deals", "/deals", deal_body(rng, key, contact, stage, company))
        reason = rng.choice(data.LOST_REASONS)  # drawn always: the same numbers every run
        if outcome == "open" and deal is not None:
            open_deals.append(deal)
        elif outcome == "won" and client.is_new(deal):
            client.act("deals won", "POST", f"/deals/{deal['id']}/win", {})
        elif outcome == "lost" and client.is_new(deal):
            client.act("deals lost", "POST", f"/deals/{deal['id']}/lose", {"reason": reason})
    return open_deals


def seed_tasks(
    client: SeedClient,
    rng: random.Random,
    deals: list[dict[str, Any]],
    count: int = 12,
) -> None:
    """Follow-ups on open deals: some overdue, some done."""
    now = datetime.now(UTC).replace(microsecond=0)
    for index in range(count if deals else 0):
        deal = deals[index % len(deals)]
        due = now + timedelta(days=rng.randint(-5, 14), hours=rng.randint(0, 8))
        body = {
            "id": seed_id("task", index),
            "title": rng.choice(data.TASK_TITLES),
            "due_at": due.isoformat().replace("+00:00", "Z"),
            "deal_id": deal["id"],
            "contact_id": deal["contact_id"],
            "done": index % 4 == 3,
        }
        client.create("tasks", "/tasks", body)


# --- support -------------------------------------------------------------------------------


def seed_tickets(client: SeedClient, rng: random.Random, contacts: list[dict[str, Any]]) -> None:
    """Two tickets in every status, with replies, notes and CSAT ratings of the solved ones."""
    if not contacts:
        return
    statuses = list(TICKET_PATHS) * 2
    for index, status in enumerate(statuses):
        subject, description = data.TICKET_SUBJECTS[index % len(data.TICKET_SUBJECTS)]
        body = {
            "id": seed_id("ticket", index),
            "contact_id": rng.choice(contacts)["id"],
            "subject": subject,
            "description": description,
            "channel": rng.choice(("email", "web", "phone", "chat")),
            "priority": rng.choice(("low", "normal", "normal", "high", "urgent")),
        }
        ticket = client.create("tickets", "/tickets", body)
        rating = {"rating": rng.randint(3, 5), "comment": rng.choice(data.CSAT_COMMENTS)}
        if client.is_new(ticket):
            work_ticket(client, ticket["id"], status, rating)


def work_ticket(client: SeedClient, ticket_id: str, status: str, rating: dict[str, Any]) -> None:
    """Take a new ticket to `status` the way an agent would, talking to the customer."""
    path = f"/tickets/{ticket_id}"
    for step in TICKET_PATHS[status]:
        if step == "open":
            client.act("ticket comments", "POST", f"{path}/comments", {"body": data.AGENT_REPLY})
        if step == "pending":
            note = {"body": data.INTERNAL_NOTE, "public": False}
            client.act("ticket comments", "POST", f"{path}/comments", note)
        if step == "resolved":
            reply = {"body": data.CUSTOMER_REPLY, "author_kind": "customer"}
            client.act("ticket comments", "POST", f"{path}/comments", reply)
        client.act("ticket status changes", "PATCH", path, {"status": step})
    if status in ("resolved", "closed"):
        client.act("csat ratings", "POST", f"{path}/csat", rating)


# --- marketing and notifications -----------------------------------------------------------


def seed_marketing(client: SeedClient, contacts: list[dict[str, Any]]) -> None:
    """A segment, a list with its subscribers, a template, a draft and a launched campaign."""
    vip_or_customer = {
        "filter_groups": [
            {"filters": [{"field": "tags", "operator": "eq", "value": "vip"}]},
            {"filters": [{"field": "lifecycle_stage", "operator": "eq", "value": "customer"}]},
        ]
    }
    segment = client.create(
        "segments",
        "/segments",
        {
            "id": seed_id("segment", 0),
            "name": "Demo: VIPs and customers",
            "filter": vip_or_customer,
        },
    )
    newsletter = client.create(
        "subscription lists",
        "/subscription-lists",
        {"id": seed_id("list", 0), "name": "Demo: product newsletter"},
    )
    if newsletter is not None:
        readers = [c for c in contacts if data.NEWSLETTER_TAG in c.get("tags", [])]
        subscribe(client, newsletter["id"], readers)
    client.create("templates", "/templates", {"id": seed_id("template", 0), **data.TEMPLATE})
    if segment is not None:
        seed_campaigns(client, segment["id"], newsletter["id"] if newsletter else None)


def subscribe(client: SeedClient, list_id: str, contacts: list[dict[str, Any]]) -> None:
    """Subscribe each contact, waiting for marketing's replica to know them (422 until then)."""
    deadline = time.monotonic() + REPLICA_WAIT_SECONDS
    for contact in contacts:
        body = {"contact_id": contact["id"], "list_id": list_id, "status": "subscribed"}
        answer = client.request("POST", "/subscriptions", body)
        while answer.status_code == 422 and time.monotonic() < deadline:
            time.sleep(0.5)
            answer = client.request("POST", "/subscriptions", body)
        if answer.status_code < 300:
            client.tally["subscriptions", "done"] += 1
        else:
            client.refused("subscriptions", "POST", "/subscriptions", answer)


def seed_campaigns(client: SeedClient, segment_id: str, list_id: str | None) -> None:
    draft = {"id": seed_id("campaign", "draft"), "segment_id": segment_id, **data.DRAFT_CAMPAIGN}
    client.create("campaigns", "/campaigns", draft)
    launched = {"id": seed_id("campaign", "launched"), "segment_id": segment_id}
    launched.update(data.LAUNCHED_CAMPAIGN, list_id=list_id)
    campaign = client.create("campaigns", "/campaigns", launched)
    if client.is_new(campaign):
        client.act("campaigns launched", "POST", f"/campaigns/{campaign['id']}/launch", {})
