"""Rebuilding the replica from a real contacts service served over HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select
from werkzeug.serving import make_server

from services.contacts.app import create_app as create_contacts_app
from services.marketing import rebuild, replica
from services.marketing.models import Contact, ContactTag
from shared.testing import admin_client, handle_event, make_event, service_app

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class ContactsService:
    url: str
    client: Any

    def create(self, **fields: Any) -> dict[str, Any]:
        response = self.client.post("/api/v1/contacts", json=fields)
        assert response.status_code == 201, response.get_json()
        return response.get_json()


@pytest.fixture
def contacts(tmp_path: Path) -> Iterator[ContactsService]:
    """The contacts service on its own SQLite database, answering HTTP on a free port."""
    apps = service_app(create_contacts_app, f"sqlite:///{tmp_path / 'contacts.db'}")
    contacts_app = next(apps)
    server = make_server("127.0.0.1", 0, contacts_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ContactsService(f"http://127.0.0.1:{server.server_port}", admin_client(contacts_app))
    server.shutdown()
    server.server_close()
    next(apps, None)


@pytest.fixture
def settings(app: Any, contacts: ContactsService) -> Any:
    """The marketing settings, pointed at the contacts service under test."""
    return app.extensions["crm.settings"].with_overrides(service_urls={"contacts": contacts.url})


def replica_rows(db: Any) -> dict[str, Contact]:
    with db.session() as session:
        rows = {row.id: row for row in session.scalars(select(Contact))}
        session.expunge_all()
        return rows


def replica_tags(db: Any, contact_id: str) -> list[str]:
    with db.session() as session:
        query = select(ContactTag.tag).where(ContactTag.contact_id == contact_id)
        return sorted(session.scalars(query))


def test_a_rebuild_fills_an_empty_replica_page_by_page(db, contacts, settings):
    made = [
        contacts.create(first_name=f"P{n}", email=f"p{n}@example.com", tags=["VIP"])
        for n in range(5)
    ]
    report = rebuild.rebuild_replica(db, settings, page_size=2)
    assert (report.seen, report.applied, report.unchanged, report.refused) == (5, 5, 0, 0)
    rows = replica_rows(db)
    assert sorted(rows) == sorted(contact["id"] for contact in made)
    first = rows[made[0]["id"]]
    assert first.email_key == "p0@example.com" and first.first_name == "P0"
    assert first.version == 1 and first.lifecycle_stage == made[0]["lifecycle_stage"]
    assert replica_tags(db, made[0]["id"]) == ["vip"]
    again = rebuild.rebuild_replica(db, settings)
    assert (again.seen, again.applied, again.unchanged) == (5, 0, 5)


def test_a_rebuild_never_overwrites_newer_data_nor_revives_the_erased(app, db, contacts, settings):
    kept = contacts.create(first_name="Kept", email="kept@example.com")
    gone = contacts.create(first_name="Gone", email="gone@example.com")
    table = replica.handlers(app.extensions["crm.settings"])
    newer = {"id": kept["id"], "first_name": "Newer", "email": "kept@example.com"}
    handle_event(
        db,
        table,
        make_event(
            "contact.updated", newer, "contacts", aggregate_id=kept["id"], aggregate_version=4
        ),
    )
    erased = make_event("contact.erased", {"id": gone["id"]}, "contacts", aggregate_id=gone["id"])
    handle_event(db, table, erased)
    report = rebuild.rebuild_replica(db, settings)
    assert (report.applied, report.unchanged) == (0, 2)
    rows = replica_rows(db)
    assert rows[kept["id"]].first_name == "Newer" and rows[kept["id"]].version == 4
    assert rows[gone["id"]].erased and rows[gone["id"]].email is None


def test_a_refused_token_stops_the_rebuild(db, contacts, settings):
    contacts.create(first_name="Ada")
    wrong = settings.with_overrides(jwt_secret="another-secret-that-the-contacts-app-refuses")
    with pytest.raises(requests.HTTPError):
        rebuild.rebuild_replica(db, wrong)
    assert replica_rows(db) == {}


def test_an_answer_that_is_no_page_stops_the_rebuild(db, settings):
    with pytest.raises(rebuild.RebuildError):
        rebuild.rebuild_replica(db, settings, lambda url, headers, timeout: {"contacts": []})


def test_an_unreadable_contact_is_skipped_and_the_rest_applied(db, settings):
    good = {"id": "00000000-0000-4000-8000-00000000ada0", "version": 2, "email": "a@example.com"}
    pages = [{"items": [{"id": "nope", "version": 1}, good, "junk"], "next_cursor": None}]
    report = rebuild.rebuild_replica(db, settings, lambda url, headers, timeout: pages.pop())
    assert (report.seen, report.applied, report.refused) == (3, 1, 2)


def test_the_command_rebuilds_from_the_configured_service(database_url, db, contacts):
    contacts.create(first_name="Ada", email="ada@example.com")
    env = {
        **os.environ,
        "MARKETING_DATABASE_URL": database_url,
        "CRM_CONTACTS_URL": contacts.url,
        "CRM_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.marketing.rebuild"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "1 seen, 1 applied" in done.stdout
    assert [row.email for row in replica_rows(db).values()] == ["ada@example.com"]
