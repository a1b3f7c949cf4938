"""Contacts CSV import speed against a raw SQLAlchemy Core insert of the same rows.

Usage: python bench/contacts_import.py [rows]   (default 50,000)
Runs on fresh SQLite files, and on PostgreSQL too when CRM_BENCH_POSTGRES_URL is set
(each run in a schema of its own, dropped afterwards). The goal: import >= 0.5 x raw.
"""

from __future__ import annotations

import csv
import io
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.contacts import importing  # noqa: E402
from services.contacts.models import Base, Contact  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.events import utcnow  # noqa: E402
from shared.outbox import outbox_row  # noqa: E402

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]
TITLES = ["Engineer", "CTO", "Buyer", "Head of Sales", "Analyst", None]
STAGES = ["subscriber", "lead", "opportunity", "customer"]


def make_rows(count: int) -> list[dict[str, Any]]:
    """Realistic contact input: names, unique emails, phones, titles, stages."""
    pick = random.Random(7).choice
    rows = []
    for number in range(count):
        first, last = pick(FIRST), pick(LAST)
        rows.append(
            {
                "first_name": first,
                "last_name": last,
                "email": f"{first}.{last}.{number}@example.com".lower(),
                "phone": f"+44 20 7946 {number % 10000:04d}",
                "title": pick(TITLES),
                "lifecycle_stage": pick(STAGES),
            }
        )
    return rows


def as_csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same rows as complete contacts-table rows (what the import would store)."""
    now = utcnow()
    defaults = {
        "company_id": None,
        "owner_id": None,
        "custom_fields": {},
        "lifetime_value": Decimal("0.00"),
        "currency": "EUR",
        "last_activity_at": None,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    return [{**defaults, **row, "id": str(uuid.uuid4()), "email_key": row["email"]} for row in rows]


@contextmanager
def fresh_database(kind: str) -> Iterator[Database]:
    """An empty contacts database: a new SQLite file or a new PostgreSQL schema."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            db = Database("contacts", f"sqlite:///{directory}/contacts.db", Base.metadata)
            db.create_all()
            yield db
            db.dispose()
        return
    server = os.environ["CRM_BENCH_POSTGRES_URL"]
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
    db = Database("contacts", url.render_as_string(hide_password=False), Base.metadata)
    try:
        db.create_all()
        yield db
    finally:
        db.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def raw_insert(kind: str, rows: list[dict[str, Any]]) -> float:
    """Seconds for one Core executemany of the rows in one transaction."""
    prepared = table_rows(rows)
    with fresh_database(kind) as db:
        started = time.perf_counter()
        with db.engine.begin() as connection:
            connection.execute(sa.insert(Contact.__table__), prepared)
        return time.perf_counter() - started


def raw_insert_with_events(kind: str, rows: list[dict[str, Any]]) -> float:
    """Seconds for the same rows plus one prepared outbox row each, in one transaction.

    What any import that keeps the outbox guarantee must at least write.
    """
    prepared = table_rows(rows)
    with fresh_database(kind) as db:
        events = [
            outbox_row("contacts", "contact.created", row["id"], {"email": row["email"]})
            for row in prepared
        ]
        started = time.perf_counter()
        with db.engine.begin() as connection:
            connection.execute(sa.insert(Contact.__table__), prepared)
            connection.execute(sa.insert(db.outbox), events)
        return time.perf_counter() - started


def service_import(kind: str, body: bytes, count: int) -> float:
    """Seconds for importing.import_contacts on the CSV of the same rows."""
    with fresh_database(kind) as db:
        started = time.perf_counter()
        report = importing.import_contacts(db, io.BytesIO(body))
        elapsed = time.perf_counter() - started
        if report.created != count:
            raise SystemExit(f"the import created {report.created} of {count}: {report.errors[:3]}")
        return elapsed


def measure(kind: str, count: int) -> None:
    rows = make_rows(count)
    body = as_csv(rows)
    raw = count / raw_insert(kind, rows)
    raw_events = count / raw_insert_with_events(kind, rows)
    imported = count / service_import(kind, body, count)
    print(f"{kind}: {count} rows")
    print(f"{kind}: raw SQLAlchemy insert: {raw:.0f} rows/s")
    print(f"{kind}: raw SQLAlchemy insert + outbox rows: {raw_events:.0f} rows/s")
    print(f"{kind}: service import: {imported:.0f} rows/s")
    print(f"{kind}: ratio import/raw: {imported / raw:.2f} (goal >= 0.50)")
    print(f"{kind}: ratio import/(raw + outbox rows): {imported / raw_events:.2f}")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    measure("sqlite", count)
    if os.environ.get("CRM_BENCH_POSTGRES_URL"):
        measure("postgresql", count)


if __name__ == "__main__":
    main()
