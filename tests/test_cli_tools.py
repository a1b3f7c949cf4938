"""The `crm` operator commands: users create, outbox status, contacts import, seed --demo."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from datetime import timedelta

import pytest
import requests
from sqlalchemy import MetaData

from gateway.app import create_app
from gateway.tests.conftest import close_app, gateway_config
from shared.cli import SERVICES, main
from shared.db import Database
from shared.events import utcnow
from shared.outbox import outbox_row
from tests.test_end_to_end import ROOT, TIMEOUT, system  # noqa: F401 - `system` is a fixture


def crm(argv: list[str]) -> int:
    """Run `crm ARGV` in this process; its exit status."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code


# --- crm users create ----------------------------------------------------------------------


def create_user(monkeypatch, email: str, password: str, role: str = "sales") -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
    argv = ["users", "create", "--email", email, "--name", "Sam Seller", "--role", role]
    return crm([*argv, "--password-stdin"])


def test_users_create_adds_a_user_who_can_sign_in(database_url, monkeypatch, capsys):
    app = create_app(gateway_config(database_url))  # makes the gateway's tables
    monkeypatch.setenv("GATEWAY_DATABASE_URL", database_url)
    try:
        assert create_user(monkeypatch, "Sam@Example.com", "long enough secret") == 0
        assert "created user Sam@Example.com (sales)" in capsys.readouterr().out

        client = app.test_client()
        credentials = {"email": "sam@example.com", "password": "long enough secret"}
        signed_in = client.post("/api/v1/auth/token", json=credentials)
        assert signed_in.status_code == 200
        token = signed_in.get_json()["access_token"]
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).get_json()
        assert (me["email"], me["name"], me["role"]) == ("Sam@Example.com", "Sam Seller", "sales")
    finally:
        close_app(app)


def test_users_create_refuses_a_taken_email_and_a_short_password(database_url, monkeypatch, capsys):
    app = create_app(gateway_config(database_url))
    monkeypatch.setenv("GATEWAY_DATABASE_URL", database_url)
    try:
        assert create_user(monkeypatch, "sam@example.com", "long enough secret") == 0
        assert create_user(monkeypatch, "SAM@example.com", "another long secret") == 1
        assert "already exists" in capsys.readouterr().err
        assert create_user(monkeypatch, "kim@example.com", "short") == 2
        assert "password" in capsys.readouterr().err
    finally:
        close_app(app)


# --- crm outbox status ---------------------------------------------------------------------


def outbox_database(service: str, url: str, waiting_for: list[timedelta], sent: int = 0) -> None:
    """A service database holding unsent events of these ages, and `sent` published ones."""
    db = Database(service, url, MetaData())
    db.create_all()
    rows = []
    for index, age in enumerate([*waiting_for, *[timedelta(0)] * sent]):
        row = outbox_row(service, "thing.happened", "a1", {"n": index})
        sent_at = utcnow() if index >= len(waiting_for) else None
        rows.append({**row, "created_at": utcnow() - age, "sent_at": sent_at})
    with db.session() as session:
        if rows:
            session.execute(db.outbox.insert(), rows)
    db.dispose()


def test_outbox_status_prints_each_services_backlog(database_url, tmp_path, monkeypatch, capsys):
    for service in SERVICES:
        monkeypatch.setenv(f"{service.upper()}_DATABASE_URL", f"sqlite:///{tmp_path / service}.db")
    monkeypatch.setenv("CONTACTS_DATABASE_URL", database_url)
    outbox_database("contacts", database_url, [timedelta(minutes=3, seconds=20), timedelta(0)], 2)
    outbox_database("sales", f"sqlite:///{tmp_path / 'sales'}.db", [], sent=1)
    outbox_database("support", f"sqlite:///{tmp_path / 'support'}.db", [timedelta(hours=5)])

    assert crm(["outbox", "status"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == list(SERVICES)
    by_service = dict(line.split(": ", 1) for line in lines)
    assert re.fullmatch(r"2 unsent, oldest 3m 2\ds ago", by_service["contacts"])
    assert by_service["sales"] == "0 unsent, oldest -"
    assert by_service["support"] == "1 unsent, oldest 5h 00m ago"
    assert by_service["gateway"].startswith("no database yet")
    assert not (tmp_path / "gateway.db").exists()  # looking made no empty database


# --- crm seed --demo and crm contacts import, against `crm run` ----------------------------


@pytest.fixture
def databases() -> dict[str, str]:
    """The `system` fixture's databases: SQLite files, as `make run` keeps them (the
    end-to-end tests run the whole system on PostgreSQL too)."""
    return {}


def run_crm(base: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CRM_ADMIN_EMAIL": "boss@example.com"}
    env["CRM_ADMIN_PASSWORD"] = "correct horse"  # the `system` fixture's admin
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *argv, "--api", base],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def items(session: requests.Session, url: str) -> list[dict]:
    answer = session.get(url, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def signed_in(api: str) -> requests.Session:
    session = requests.Session()
    credentials = {"email": "boss@example.com", "password": "correct horse"}
    token = session.post(f"{api}/auth/token", json=credentials, timeout=TIMEOUT).json()
    session.headers["Authorization"] = f"Bearer {token['access_token']}"
    return session


@pytest.mark.xdist_group("crm-run-sqlite")
def test_seed_demo_twice_then_import_contacts_through_the_gateway(system, tmp_path):  # noqa: F811
    base, _tap = system
    first = run_crm(base, "seed", "--demo")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "deals: 15 created" in first.stdout and "campaigns launched: 1 done" in first.stdout
    again = run_crm(base, "seed", "--demo")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "contacts: 40 already there" in again.stdout and "created" not in again.stdout

    api = f"{base}/api/v1"
    session = signed_in(api)
    [pipeline] = [p for p in items(session, f"{api}/pipelines") if p["is_default"]]
    for stage in pipeline["stages"]:
        assert items(session, f"{api}/deals?status=open&stage_id={stage['id']}")
    assert items(session, f"{api}/deals?status=won")
    assert all(d["lost_reason"] for d in items(session, f"{api}/deals?status=lost"))
    for status in ("new", "open", "pending", "resolved", "closed"):
        assert len(items(session, f"{api}/tickets?status={status}")) == 2
    campaigns = {c["name"]: c["status"] for c in items(session, f"{api}/campaigns")}
    assert campaigns["Demo: summer product update"] == "draft"
    assert campaigns["Demo: spring webinar invitation"] in ("sending", "sent")
    assert len(items(session, f"{api}/contacts?limit=200")) >= 40

    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "first_name,last_name,email\nGrace,Hopper,grace@navy.example\nBad,Row,not-an-email\n"
    )
    imported = run_crm(base, "contacts", "import", str(csv_file))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert imported.stdout.splitlines() == [
        "2 rows: 1 created, 0 updated, 0 unchanged, 1 rejected",
        "  row 3: email: Not a valid email address.",
    ]
    assert items(session, f"{api}/contacts?email=grace@navy.example")
