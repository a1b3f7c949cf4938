"""Contacts out as CSV: streamed in chunks, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.sql.elements import ColumnElement

from services.contacts import domain
from services.contacts.csv_rows import CF_PREFIX, FORMULA_STARTS
from services.contacts.models import Contact, CustomField
from shared.db import Database
from shared.events import isoformat

CHUNK_ROWS = 1000
EXPORT_COLUMNS = (
    "id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "company_id",
    "title",
    "lifecycle_stage",
    "owner_id",
    "tags",
    "lifetime_value",
    "currency",
    "last_activity_at",
    "created_at",
    "updated_at",
)

contacts = Contact.__table__


# --- exporting -----------------------------------------------------------------------------


def export_columns(definitions: Mapping[str, CustomField]) -> list[str]:
    """The export's header: the contact columns, then one cf.<name> per custom field."""
    return [*EXPORT_COLUMNS, *(CF_PREFIX + name for name in sorted(definitions))]


def export_csv(
    db: Database, where: ColumnElement[bool] | None = None, chunk_rows: int = CHUNK_ROWS
) -> Iterator[str]:
    """The contacts as CSV text, a chunk at a time, each chunk read in its own short session."""
    with db.session() as session:
        names = sorted(domain.field_definitions(session, "contact"))
    yield _csv_line(export_columns(dict.fromkeys(names)))
    last_id = ""
    while True:
        with db.engine.connect() as connection:
            query = select(contacts).where(contacts.c.id > last_id)
            if where is not None:
                query = query.where(where)
            rows = list(connection.execute(query.order_by(contacts.c.id).limit(chunk_rows)))
            tag_names = domain.tag_names_by_contact(connection, [row.id for row in rows])
        if not rows:
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        for row in rows:
            writer.writerow(_export_cells(row, sorted(tag_names.get(row.id, [])), names))
        yield buffer.getvalue()
        last_id = rows[-1].id


def _csv_line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue()


def _export_cells(row: Any, tag_names: list[str], field_names: list[str]) -> list[str]:
    values = [getattr(row, name) for name in EXPORT_COLUMNS[:9]]
    values += [";".join(tag_names), f"{row.lifetime_value:.2f}", row.currency]
    values += [row.last_activity_at, row.created_at, row.updated_at]
    custom = row.custom_fields or {}
    values += [custom.get(name) for name in field_names]
    return [safe_cell(_as_text(value)) for value in values]


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, list):
        return ";".join(str(item) for item in value)
    return str(value)


def safe_cell(text: str) -> str:
    """A cell a spreadsheet will not run as a formula: a leading quote where it could."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text
