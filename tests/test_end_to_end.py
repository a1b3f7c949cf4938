"""`crm run` (what `make run` does) as real processes, used through the gateway only."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pika
import pytest
import requests

from tests.crm_run import (
    crm_run_environment,
    database_settings,
    eventually,
    free_port,
    free_ports,
    internal_url,
    running_crm,
    service_schemas,
)
from tests.faults.system import read_mail

ROOT = Path(__file__).resolve().parents[1]
# Each test starts the whole system (some 20 processes): one at a time, whatever -n says
# (the SQLite runs in a group of their own, see `databases`).
pytestmark = pytest.mark.xdist_group("crm-run")
TIMEOUT = 10


class EventTap:
    """A queue of the test's own bound to every event, to watch what the worker publishes."""

    def __init__(self, amqp_url: str, prefix: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(f"{prefix}crm.events", exchange_type="topic", durable=True)
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(self.queue, f"{prefix}crm.events", routing_key="#")
        self.seen: list[dict] = []

    def wait_for(self, event_type: str, count: int = 1, timeout: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, _props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                self.connection.sleep(0.1)
                continue
            self.seen.append(json.loads(body))
            matching = [e for e in self.seen if e["type"] == event_type]
            if len(matching) >= count:
                return matching
        raise AssertionError(
            f"{event_type} x{count} never published; saw {[e['type'] for e in self.seen]}"
        )

    def close(self) -> None:
        self.connection.close()


@pytest.fixture(
    params=[
        "postgresql",
        # No PostgreSQL connection held: may run beside the PostgreSQL-backed systems.
        pytest.param("sqlite", marks=pytest.mark.xdist_group("crm-run-sqlite")),
    ]
)
def databases(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Each service's database: a PostgreSQL schema each (as in production), or none (SQLite
    files under CRM_DATA_DIR, as `make run` keeps them)."""
    if request.param == "sqlite":
        yield {}
        return
    tag = f"e2e_{uuid.uuid4().hex[:8]}"
    with service_schemas(request.getfixturevalue("postgres_run_url"), tag) as urls:
        yield urls


@pytest.fixture
def system(tmp_path, amqp_url, amqp_prefix, databases) -> Iterator[tuple[str, EventTap]]:
    from shared.cli import SERVICES

    ports = free_ports(SERVICES)
    env = crm_run_environment(
        ports,
        tmp_path / "var",
        amqp_url,
        amqp_prefix,
        CRM_ADMIN_EMAIL="boss@example.com",
        CRM_ADMIN_PASSWORD="correct horse",
        CRM_NOTIFICATIONS_TICK_SECONDS="0.2",
        **database_settings(databases),
    )
    from conftest import remember_queue

    for name in (name for name, spec in SERVICES.items() if spec.has_worker):
        for suffix in ("", ".dlq", ".retry.200ms", ".retry.500ms"):
            remember_queue(amqp_prefix, f"{amqp_prefix}{name}.events{suffix}")
    tap = EventTap(amqp_url, amqp_prefix)
    try:
        with running_crm(env, ports, tmp_path / "crm-run.log"):
            yield f"http://127.0.0.1:{ports['gateway']}", tap
    finally:
        tap.close()


def test_make_run_serves_contacts_through_the_gateway(system):
    base, tap = system
    api = f"{base}/api/v1"
    assert requests.get(f"{api}/contacts", timeout=TIMEOUT).status_code == 401
    login = requests.post(
        f"{api}/auth/token",
        json={"email": "boss@example.com", "password": "correct horse"},
        timeout=TIMEOUT,
    )
    assert login.status_code == 200
    token = login.json()["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    created = session.post(
        f"{api}/contacts",
        json={"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"},
        headers={"X-Request-ID": "e2e-create"},
        timeout=TIMEOUT,
    )
    assert created.status_code == 201 and created.headers["X-Request-ID"] == "e2e-create"
    ada = created.json()
    [event] = tap.wait_for("contact.created")
    assert event["aggregate_id"] == ada["id"] and event["correlation_id"] == "e2e-create"

    assert [
        c["id"] for c in session.get(f"{api}/contacts?q=lovelace", timeout=TIMEOUT).json()["items"]
    ] == [ada["id"]]
    search = {
        "filter_groups": [
            {"filters": [{"field": "email", "operator": "eq", "value": "ada@example.com"}]}
        ]
    }
    assert (
        session.post(f"{api}/contacts/search", json=search, timeout=TIMEOUT).json()["items"][0][
            "id"
        ]
        == ada["id"]
    )

    rows = (
        "first_name,last_name,email,tags\n"
        "Charles,Babbage,charles@example.com,engine;vip\n"
        "Ada,L,ADA@example.com,\n"
    )
    report = session.post(
        f"{api}/contacts/import",
        data=rows.encode(),
        headers={"Content-Type": "text/csv"},
        timeout=60,
    ).json()
    assert (report["created"], report["updated"], report["rejected"]) == (1, 1, 0)

    export = session.get(f"{api}/contacts/export", timeout=60)
    assert export.status_code == 200 and export.headers["Content-Type"].startswith("text/csv")
    emails = sorted(row["email"] for row in csv.DictReader(io.StringIO(export.text)))
    # The import matched Ada by her address in any case and took the file's spelling of it.
    assert emails == ["ADA@example.com", "charles@example.com"]

    charles = session.get(f"{api}/contacts?email=charles@example.com", timeout=TIMEOUT).json()[
        "items"
    ][0]
    merged = session.post(
        f"{api}/contacts/{ada['id']}/merge", json={"duplicate_id": charles["id"]}, timeout=TIMEOUT
    )
    assert merged.status_code == 200 and "vip" in merged.json()["tags"]
    tap.wait_for("contact.merged")

    assert (
        session.delete(f"{api}/contacts/{ada['id']}?erase=true", timeout=TIMEOUT).status_code == 204
    )
    [erased] = tap.wait_for("contact.erased")
    assert erased["data"]["id"] == ada["id"]
    assert session.get(f"{api}/contacts/{ada['id']}", timeout=TIMEOUT).status_code == 404

    bad = session.post(
        f"{api}/contacts",
        data="{oops",
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert bad.status_code == 400 and bad.headers["Content-Type"].startswith(
        "application/problem+json"
    )


def test_make_run_without_a_broker_says_so_in_one_line_and_fails(tmp_path):
    env = {
        **os.environ,
        "CRM_DATA_DIR": str(tmp_path),
        "CRM_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
    }
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert (
        len(lines) == 1
        and "RabbitMQ is not reachable" in lines[0]
        and "rabbitmq-server" in lines[0]
    )


def test_the_running_system_is_ready_and_counts_requests_of_every_worker(system, tmp_path):
    base, _tap = system
    internal = internal_url(tmp_path / "var")  # /ready and /metrics are not on the public port
    for _ in range(6):  # spread over both gunicorn workers
        requests.get(f"{base}/health", timeout=TIMEOUT)
    ready = requests.get(f"{internal}/ready", timeout=TIMEOUT)
    assert ready.status_code == 200 and ready.json()["checks"] == {"broker": "ok", "database": "ok"}
    metrics = requests.get(f"{internal}/metrics", timeout=TIMEOUT).text
    counted = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("crm_http_requests_total{") and 'endpoint="/health"' in line
    ]
    assert sum(counted) >= 6, metrics[:2000]
    assert 'crm_outbox_backlog{service="gateway"}' in metrics  # read at scrape, beside the sums


def _login(api: str) -> requests.Session:
    login = requests.post(
        f"{api}/auth/token",
        json={"email": "boss@example.com", "password": "correct horse"},
        timeout=TIMEOUT,
    )
    assert login.status_code == 200
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    return session


def _win(session: requests.Session, api: str, deal_id: str) -> None:
    won = session.post(f"{api}/deals/{deal_id}/win", json={}, timeout=TIMEOUT)
    assert won.status_code == 200, won.text


def test_a_web_lead_converted_and_won_becomes_a_customer_once(system, amqp_url, amqp_prefix):
    base, tap = system
    api = f"{base}/api/v1"
    form = {"first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.example"}
    assert requests.post(f"{api}/forms/leads", data=form, timeout=TIMEOUT).status_code == 202
    session = _login(api)
    [lead] = session.get(f"{api}/leads?email=grace@navy.example", timeout=TIMEOUT).json()["items"]

    body = {"deal": {"name": "Navy compilers", "amount": "500.00", "currency": "EUR"}}
    converted = session.post(f"{api}/leads/{lead['id']}/convert", json=body, timeout=TIMEOUT)
    assert converted.status_code == 200, converted.text
    contact_id, deal_id = converted.json()["contact_id"], converted.json()["deal_id"]
    [event] = tap.wait_for("lead.converted")
    assert event["data"]["contact_id"] == contact_id

    def contact() -> requests.Response:
        return session.get(f"{api}/contacts/{contact_id}", timeout=TIMEOUT)

    made = eventually(contact, lambda r: r.status_code == 200)
    assert made.status_code == 200 and made.json()["email"] == "grace@navy.example"

    _win(session, api, deal_id)
    [won] = tap.wait_for("deal.won")
    customer = eventually(contact, lambda r: r.json()["lifetime_value"]["amount"] == "500.00")
    assert customer.json()["lifecycle_stage"] == "customer"

    # The broker delivers the same deal.won again: it must not count twice.
    from shared.config import load_settings
    from shared.deadletters import publish_raw

    settings = load_settings("sales").with_overrides(amqp_url=amqp_url, amqp_prefix=amqp_prefix)
    publish_raw(settings, "deal.won", json.dumps(won).encode())
    second = session.post(
        f"{api}/deals",
        json={"name": "Navy support", "contact_id": contact_id, "amount": "100.00"},
        timeout=TIMEOUT,
    ).json()
    _win(session, api, second["id"])
    final = eventually(contact, lambda r: r.json()["lifetime_value"]["amount"] != "500.00")
    assert final.json()["lifetime_value"] == {"amount": "600.00", "currency": "EUR"}


def test_a_ticket_from_a_new_address_makes_the_contact_and_lands_on_its_timeline(system):
    base, tap = system
    api = f"{base}/api/v1"
    session = _login(api)
    body = {
        "subject": "Invoice is wrong",
        "description": "Please check invoice 42",
        "channel": "email",
        "priority": "high",
        "requester": {"email": "kay@customer.example", "name": "Kay Lee"},
    }
    created = session.post(f"{api}/tickets", json=body, timeout=TIMEOUT)
    assert created.status_code == 201, created.text
    ticket = created.json()
    tap.wait_for("ticket.created")

    def timeline() -> requests.Response:
        return session.get(f"{api}/contacts/{ticket['contact_id']}/interactions", timeout=TIMEOUT)

    def has_ticket(answer: requests.Response) -> bool:
        types = {e.get("event_type") for e in answer.json().get("items", [])}
        return answer.status_code == 200 and "ticket.created" in types

    entries = eventually(timeline, has_ticket)
    assert entries.status_code == 200, entries.text
    opened = [e for e in entries.json()["items"] if e.get("event_type") == "ticket.created"]
    assert [e["subject"] for e in opened] == ["Invoice is wrong"]
    contact = session.get(f"{api}/contacts/{ticket['contact_id']}", timeout=TIMEOUT).json()
    assert contact["email"] == "kay@customer.example"

    reply = {"body": "We are on it", "public": True}
    url = f"{api}/tickets/{ticket['id']}/comments"
    assert session.post(url, json=reply, timeout=TIMEOUT).status_code == 201
    resolved = session.patch(
        f"{api}/tickets/{ticket['id']}", json={"status": "resolved"}, timeout=TIMEOUT
    )
    assert resolved.status_code == 200, resolved.text
    [event] = tap.wait_for("ticket.resolved")
    token = event["data"]["csat_token"]
    rated = requests.post(f"{api}/csat/{token}", json={"rating": 5}, timeout=TIMEOUT)
    assert rated.status_code in (200, 201), rated.text
    again = requests.post(f"{api}/csat/{token}", json={"rating": 1}, timeout=TIMEOUT)
    assert again.status_code == 409
    wanted = {"ticket.resolved", "ticket.csat_recorded"}

    def recorded(answer: requests.Response) -> bool:
        return wanted <= {entry.get("event_type") for entry in answer.json()["items"]}

    assert recorded(eventually(timeline, recorded))


def _mail_to(directory: Path, address: str) -> list[EmailMessage]:
    """The messages the SMTP catcher kept as .eml files for one recipient, oldest first."""
    return [message for message in read_mail(directory) if address in (message["To"] or "")]


def test_mail_goes_out_through_the_smtp_catcher_once_and_is_tracked(system, tmp_path):
    base, tap = system
    api = f"{base}/api/v1"
    mail = tmp_path / "var" / "mail"
    session = _login(api)
    body = {
        "subject": "Printer on fire",
        "description": "It is on fire",
        "channel": "email",
        "requester": {"email": "lin@customer.example", "name": "Lin Wu"},
    }
    created = session.post(f"{api}/tickets", json=body, timeout=TIMEOUT)
    assert created.status_code == 201, created.text
    ticket = created.json()

    def letters() -> list[EmailMessage]:
        return _mail_to(mail, "lin@customer.example") if mail.is_dir() else []

    [ack] = eventually(letters, lambda found: len(found) >= 1)
    assert "Printer on fire" in ack["Subject"] and ack["Message-ID"]
    assert {"text/plain", "text/html"} <= {part.get_content_type() for part in ack.walk()}

    resolved = session.patch(
        f"{api}/tickets/{ticket['id']}", json={"status": "resolved"}, timeout=TIMEOUT
    )
    assert resolved.status_code == 200, resolved.text
    found = eventually(letters, lambda found: len(found) >= 2)
    assert len(found) == 2, [letter["Subject"] for letter in found]
    csat = found[1]
    html = csat.get_body(("html",)).get_content()
    clicks = re.findall(r'href="(http[^"]*/t/c/[^"]+)"', html)
    assert len(clicks) == 6  # one link per score, and the rating page's
    [pixel] = re.findall(r'src="(http[^"]*/t/o/[^"]+\.gif)"', html)

    opened = requests.get(pixel, timeout=TIMEOUT)  # no login: a mail client fetches it
    assert opened.status_code == 200 and opened.headers["Content-Type"] == "image/gif"
    [event] = tap.wait_for("email.opened")
    click = clicks[4]  # "5 - Excellent"
    redirect = requests.get(click, allow_redirects=False, timeout=TIMEOUT)
    assert redirect.status_code == 302
    assert redirect.headers["Location"].startswith(f"{api}/csat/")
    assert redirect.headers["Location"].endswith("?rating=5")
    tap.wait_for("email.clicked")
    browser = {"Accept": "text/html,*/*;q=0.8"}
    page = requests.get(redirect.headers["Location"], headers=browser, timeout=TIMEOUT)
    assert page.status_code == 200 and 'value="5" checked' in page.text
    forged = requests.get(click[:-4] + "AAAA", allow_redirects=False, timeout=TIMEOUT)
    assert forged.status_code == 404 and "Location" not in forged.headers

    log = session.get(f"{api}/messages?to=lin@customer.example", timeout=TIMEOUT).json()
    by_id = {message["id"]: message for message in log["items"]}
    assert len(by_id) == 2 and {m["status"] for m in by_id.values()} == {"sent"}
    assert by_id[event["data"]["message_id"]]["subject"] == csat["Subject"]


def test_an_agent_made_through_the_gateway_is_emailed_the_ticket_assigned_to_them(system, tmp_path):
    base, tap = system
    api = f"{base}/api/v1"
    session = _login(api)
    agent = {"email": "sam@crm.example", "name": "Sam Agent", "role": "support"}
    made = session.post(
        f"{api}/users", json={**agent, "password": "long enough pw"}, timeout=TIMEOUT
    )
    assert made.status_code == 201, made.text
    [event] = [e for e in tap.wait_for("user.created", 2) if e["data"]["id"] == made.json()["id"]]
    assert "password" not in json.dumps(event)
    body = {"subject": "Fax jammed", "requester": {"email": "kim@customer.example"}}
    ticket = session.post(f"{api}/tickets", json=body, timeout=TIMEOUT).json()

    assign = {"assignee_id": made.json()["id"]}
    url = f"{api}/tickets/{ticket['id']}/assign"
    assert session.post(url, json=assign, timeout=TIMEOUT).status_code == 200
    mail = tmp_path / "var" / "mail"

    def letters() -> list[EmailMessage]:
        return _mail_to(mail, "sam@crm.example") if mail.is_dir() else []

    [notice] = eventually(letters, lambda found: len(found) >= 1)
    assert notice["Subject"].startswith("Assigned to you: Fax jammed")
    assert "Hello Sam Agent" in notice.get_body(("plain",)).get_content()


def test_a_segment_follows_a_contact_and_its_unsubscribe_link_needs_no_login(system, tmp_path):
    base, tap = system
    api = f"{base}/api/v1"
    session = _login(api)
    body = {"first_name": "Mia", "email": "mia@customer.example", "tags": ["vip"]}
    mia = session.post(f"{api}/contacts", json=body, timeout=TIMEOUT).json()
    vips = {"filter_groups": [{"filters": [{"field": "tags", "operator": "eq", "value": "vip"}]}]}
    segment = session.post(
        f"{api}/segments", json={"name": "VIPs", "filter": vips}, timeout=TIMEOUT
    )
    assert segment.status_code == 201, segment.text

    def members() -> requests.Response:
        url = f"{api}/segments/{segment.json()['id']}/members"
        return session.get(url, timeout=TIMEOUT)

    found = eventually(members, lambda r: r.json()["items"])
    assert [m["email"] for m in found.json()["items"]] == ["mia@customer.example"]

    subscribe = {"contact_id": mia["id"], "status": "subscribed"}
    subscribed = session.post(f"{api}/subscriptions", json=subscribe, timeout=TIMEOUT)
    assert subscribed.status_code == 201, subscribed.text
    from services.marketing.unsubscribe import unsubscribe_url
    from shared.config import load_settings

    settings = load_settings("marketing").with_overrides(
        extra={**load_settings("marketing").extra, "public_url": base}
    )
    link = unsubscribe_url(settings, mia["id"], "mia@customer.example")
    looked = requests.get(link, timeout=TIMEOUT)  # a mail scanner's prefetch changes nothing
    assert looked.status_code == 200 and looked.json()["status"] == "confirm"
    assert requests.post(link, timeout=TIMEOUT).status_code == 200  # no login
    changes = tap.wait_for("subscription.changed", 2)
    assert [c["data"]["status"] for c in changes] == ["subscribed", "unsubscribed"]
    forged = requests.get(link[:-3] + "xyz", timeout=TIMEOUT)
    assert forged.status_code == 404
    after = session.get(f"{api}/subscriptions?contact_id={mia['id']}", timeout=TIMEOUT).json()
    assert [s["status"] for s in after["items"]] == ["unsubscribed"]


def test_a_campaign_reaches_its_segment_once_and_counts_opens_and_unsubscribes(system, tmp_path):
    base, tap = system
    api = f"{base}/api/v1"
    mail = tmp_path / "var" / "mail"
    session = _login(api)
    people = {}
    for name in ("Noa", "Eli"):
        body = {"first_name": name, "email": f"{name.lower()}@spring.example", "tags": ["spring"]}
        made = session.post(f"{api}/contacts", json=body, timeout=TIMEOUT)
        assert made.status_code == 201, made.text
        people[name] = made.json()
    spring = {
        "filter_groups": [{"filters": [{"field": "tags", "operator": "eq", "value": "spring"}]}]
    }
    segment = session.post(f"{api}/segments", json={"name": "Spring", "filter": spring}).json()
    members = f"{api}/segments/{segment['id']}/members"
    eventually(lambda: session.get(members, timeout=TIMEOUT), lambda r: len(r.json()["items"]) == 2)
    said_no = {"contact_id": people["Eli"]["id"], "status": "unsubscribed"}
    assert session.post(f"{api}/subscriptions", json=said_no, timeout=TIMEOUT).status_code == 201

    content = {"subject": "Spring sale", "body_text": "Half price.", "body_html": "<p>Half</p>"}
    draft = {"name": "Spring sale", "segment_id": segment["id"], **content}
    campaign = session.post(f"{api}/campaigns", json=draft, timeout=TIMEOUT).json()
    launch = f"{api}/campaigns/{campaign['id']}/launch"
    assert session.post(launch, json={}, timeout=TIMEOUT).status_code == 202
    assert session.post(launch, json={}, timeout=TIMEOUT).status_code == 409

    def letters() -> list[EmailMessage]:
        return _mail_to(mail, "@spring.example") if mail.is_dir() else []

    [letter] = eventually(letters, lambda found: len(found) >= 1)
    assert letter["To"] == "noa@spring.example" and letter["Subject"] == "Spring sale"

    def stats() -> requests.Response:
        return session.get(f"{api}/campaigns/{campaign['id']}", timeout=TIMEOUT)

    sent = eventually(stats, lambda r: r.json()["stats"]["sent"] == 1).json()
    assert sent["status"] == "sent" and sent["stats"]["recipients"] == 1
    [pixel] = re.findall(
        r'src="(http[^"]*/t/o/[^"]+\.gif)"', letter.get_body(("html",)).get_content()
    )
    assert requests.get(pixel, timeout=TIMEOUT).status_code == 200  # no login
    eventually(stats, lambda r: r.json()["stats"]["opened"] == 1)
    [link] = re.findall(r"<(http[^>]+)>", re.sub(r"\s+", "", str(letter["List-Unsubscribe"])))
    one_click = requests.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=TIMEOUT)
    assert one_click.status_code < 300, one_click.text
    final = eventually(stats, lambda r: r.json()["stats"]["unsubscribed"] == 1).json()
    assert final["stats"]["opened"] == 1 and len(letters()) == 1  # never a second email


def test_the_customer_view_and_the_dashboard_hear_from_every_service(system):
    base, _tap = system
    api = f"{base}/api/v1"
    session = _login(api)
    person = {"first_name": "Lin", "last_name": "Park", "email": "lin@view.example"}
    contact = session.post(f"{api}/contacts", json=person, timeout=TIMEOUT).json()
    deal = {"name": "Lin's renewal", "contact_id": contact["id"], "amount": "250.00"}
    made = session.post(f"{api}/deals", json=deal, timeout=TIMEOUT)
    assert made.status_code == 201, made.text
    issue = {"contact_id": contact["id"], "subject": "Where is my order", "channel": "email"}
    ticket = eventually(
        lambda: session.post(f"{api}/tickets", json=issue, timeout=TIMEOUT),
        lambda r: r.status_code == 201,
    )
    assert ticket.status_code == 201, ticket.text
    consent = {"contact_id": contact["id"], "status": "subscribed"}
    subscribed = eventually(  # marketing learns of the contact from contact.created
        lambda: session.post(f"{api}/subscriptions", json=consent, timeout=TIMEOUT),
        lambda r: r.status_code == 201,
    )
    assert subscribed.status_code == 201, subscribed.text

    answer = session.get(f"{api}/customers/{contact['id']}", timeout=TIMEOUT)

    assert answer.status_code == 200, answer.text
    view = answer.json()
    assert view["unavailable"] == [] and view["forbidden"] == []
    assert view["contact"]["email"] == "lin@view.example"
    assert [d["id"] for d in view["deals"]["open"]] == [made.json()["id"]]
    [seen] = view["tickets"]
    assert seen["id"] == ticket.json()["id"] and "sla" in seen and seen["sla_breached"] is False
    assert [s["status"] for s in view["subscriptions"]] == ["subscribed"]
    assert view["csat"]["count"] == 0 and view["leads"] == [] and view["company"] is None
    assert isinstance(view["timeline"], list) and isinstance(view["messages"], list)
    assert view["campaign_engagement"]["emails"] == 0
    unknown = session.get(f"{api}/customers/{'0' * 8}-0000-4000-8000-{'0' * 12}", timeout=TIMEOUT)
    assert unknown.status_code == 404

    board = session.get(f"{api}/dashboard", timeout=TIMEOUT)

    assert board.status_code == 200, board.text
    figures = board.json()
    assert figures["unavailable"] == [] and figures["forbidden"] == []
    assert figures["pipeline"]["open_deals"] == 1
    assert figures["tickets"]["open"] == 1
    # No customer at the period's start (Lin is a lead): no rate to give, nobody at risk.
    assert figures["churn"] == {"rate": None, "customers_at_start": 0, "churned": 0, "at_risk": 0}


def test_one_customers_life_through_the_gateway_shows_in_the_unified_view(system, tmp_path):
    """Form lead → scored → converted → deal won → ticket answered and resolved → CSAT →
    campaign to customers → opened → unsubscribed → erased; the view follows each step."""
    base, tap = system
    api = f"{base}/api/v1"
    mail = tmp_path / "var" / "mail"
    session = _login(api)
    rule = {"name": "Company address", "field": "email_domain", "operator": "eq"}
    rule |= {"value": "life.example", "points": 40}
    assert session.post(f"{api}/lead-scoring-rules", json=rule, timeout=TIMEOUT).status_code == 201

    form = {"first_name": "Ada", "last_name": "Life", "email": "ada@life.example"}
    assert requests.post(f"{api}/forms/leads", data=form, timeout=TIMEOUT).status_code == 202
    [lead] = session.get(f"{api}/leads?email=ada@life.example", timeout=TIMEOUT).json()["items"]
    assert lead["score"] >= 40
    deal = {"deal": {"name": "Life plan", "amount": "300.00", "currency": "EUR"}}
    converted = session.post(f"{api}/leads/{lead['id']}/convert", json=deal, timeout=TIMEOUT)
    assert converted.status_code == 200, converted.text
    contact_id, deal_id = converted.json()["contact_id"], converted.json()["deal_id"]

    def view() -> dict:
        answer = session.get(f"{api}/customers/{contact_id}", timeout=TIMEOUT)
        return answer.json() if answer.status_code == 200 else {}

    def seen(check) -> dict:
        found = eventually(view, lambda v: bool(v) and check(v), timeout=30)
        assert found and check(found), found
        assert found["unavailable"] == [], found["unavailable"]
        return found

    seen(lambda v: [d["id"] for d in v["deals"]["open"]] == [deal_id])
    _win(session, api, deal_id)
    seen(lambda v: [d["id"] for d in v["deals"]["won"]] == [deal_id])
    seen(lambda v: v["contact"]["lifecycle_stage"] == "customer")  # contacts heard deal.won

    issue = {"contact_id": contact_id, "subject": "Cannot log in", "channel": "email"}
    ticket = session.post(f"{api}/tickets", json=issue, timeout=TIMEOUT).json()
    reply = {"body": "Try this link", "public": True}
    comments = f"{api}/tickets/{ticket['id']}/comments"
    assert session.post(comments, json=reply, timeout=TIMEOUT).status_code == 201
    done = {"status": "resolved"}
    assert session.patch(f"{api}/tickets/{ticket['id']}", json=done, timeout=TIMEOUT).ok
    token = tap.wait_for("ticket.resolved")[-1]["data"]["csat_token"]
    assert requests.post(f"{api}/csat/{token}", json={"rating": 4}, timeout=TIMEOUT).ok
    rated = seen(lambda v: v["csat"]["count"] == 1)
    assert [t["status"] for t in rated["tickets"]] == ["resolved"]

    customers = {"filter_groups": [{"filters": [{"field": "email", "operator": "eq"}]}]}
    customers["filter_groups"][0]["filters"][0]["value"] = "ada@life.example"
    customers["filter_groups"][0]["filters"].append(
        {"field": "lifecycle_stage", "operator": "eq", "value": "customer"}
    )
    segment = session.post(f"{api}/segments", json={"name": "Customers", "filter": customers})
    members = f"{api}/segments/{segment.json()['id']}/members"
    eventually(lambda: session.get(members, timeout=TIMEOUT), lambda r: r.json()["items"])
    content = {"subject": "Thank you", "body_text": "Thanks.", "body_html": "<p>Thanks</p>"}
    draft = {"name": "Thanks", "segment_id": segment.json()["id"], **content}
    campaign = session.post(f"{api}/campaigns", json=draft, timeout=TIMEOUT).json()
    launch = f"{api}/campaigns/{campaign['id']}/launch"
    assert session.post(launch, json={}, timeout=TIMEOUT).status_code == 202

    def thanks() -> list[EmailMessage]:
        found = _mail_to(mail, "ada@life.example") if mail.is_dir() else []
        return [letter for letter in found if letter["Subject"] == "Thank you"]

    [letter] = eventually(thanks, lambda found: len(found) >= 1, timeout=30)
    html = letter.get_body(("html",)).get_content()
    [pixel] = re.findall(r'src="(http[^"]*/t/o/[^"]+\.gif)"', html)
    assert requests.get(pixel, timeout=TIMEOUT).status_code == 200
    seen(lambda v: v["campaign_engagement"]["opened"] >= 1)
    [link] = re.findall(r"<(http[^>]+)>", re.sub(r"\s+", "", str(letter["List-Unsubscribe"])))
    one_click = requests.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=TIMEOUT)
    assert one_click.status_code < 300, one_click.text
    seen(lambda v: "unsubscribed" in [s["status"] for s in v["subscriptions"]])

    erased = session.delete(f"{api}/contacts/{contact_id}?erase=true", timeout=TIMEOUT)
    assert erased.status_code == 204, erased.text
    gone = eventually(
        lambda: session.get(f"{api}/customers/{contact_id}", timeout=TIMEOUT),
        lambda r: r.status_code == 404,
    )
    assert gone.status_code == 404
    tap.wait_for("contact.erased")
