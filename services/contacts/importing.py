"""CSV import and export of contacts: streamed, in chunks, with bulk statements.

Import is two passes over a seekable file: the first proves the whole file is UTF-8 CSV
with a known header (so a bad file writes nothing), the second validates each row with
the API's schema and upserts by email, one transaction and a handful of bulk statements
per chunk, each created/updated contact's event written to the outbox in that transaction.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from types import SimpleNamespace
from typing import IO, Any

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.contacts import domain
from services.contacts.csv_rows import (
    CF_PREFIX,
    RowRejected,
    ValidRow,
    csv_records,
    plain_types,
    read_header,
    row_schema,
    validate_records,
)
from services.contacts.models import Company, Contact, CustomField, Tag, contact_tags, new_id
from services.contacts.schemas import contact_view
from shared.db import Database
from shared.events import utcnow
from shared.outbox import outbox_row, record_events
from shared.web import ApiError

CHUNK_ROWS = 5000
# From this many records on, a helper process validates while this one writes.
PARALLEL_MIN_RECORDS = 20_000
MAX_REPORTED_ERRORS = 1000
UPDATED_COLUMNS = (*domain.CONTACT_FIELDS, "email_key", "custom_fields", "version", "updated_at")

contacts = Contact.__table__
tags_table = Tag.__table__


@dataclass
class ImportReport:
    """What an import did, row by row where a row was refused."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rows: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, line: int, errors: Mapping[str, Any]) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"row": line, "errors": dict(errors)})

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "rows": self.rows,
            "errors": self.errors,
        }
        if self.rejected > len(self.errors):
            body["errors_truncated"] = True
            body["detail"] = f"Only the first {MAX_REPORTED_ERRORS} rejected rows are listed."
        return body


# --- importing -----------------------------------------------------------------------------


def _validate_inline(*args: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(validate_records(*args))
    return future


@contextmanager
def _validator(records: int, columns: list[str]) -> Iterator[Callable[..., Future[Any]]]:
    """Submit chunks for validation: to a helper process for big files, else inline.

    Validating (marshmallow, per row) and writing (SQL, per chunk) then run on two cores:
    the next chunk is checked while this one is written.
    """
    if records < PARALLEL_MIN_RECORDS:
        yield _validate_inline
        return
    context = multiprocessing.get_context("spawn")  # never fork a process holding connections
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        pool.submit(row_schema, tuple(columns))  # start it now: it warms while we work
        yield functools.partial(pool.submit, validate_records)


def _batches(
    rows: Iterator[tuple[int, list[str]]], size: int
) -> Iterator[list[tuple[int, list[str]]]]:
    batch: list[tuple[int, list[str]]] = []
    for record in rows:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_contacts(
    db: Database, source: IO[bytes], actor_id: str | None = None, chunk_rows: int = CHUNK_ROWS
) -> ImportReport:
    """Upsert contacts from a seekable UTF-8 CSV file; BadImportFile if it cannot be read."""
    with db.session() as session:
        definitions = domain.field_definitions(session, "contact")
    columns, records = read_header(source, definitions)
    types = plain_types(definitions)
    report = ImportReport(rows=records)
    # One connection for the whole file (a transaction per chunk): on SQLite, reconnecting
    # per chunk would checkpoint the WAL every time the last connection closes.
    with (
        db.engine.connect() as connection,
        Session(bind=connection, info={"db": db}, expire_on_commit=False) as session,
        closing(csv_records(source)) as rows,
        _validator(records, columns) as validate,
    ):
        if connection.dialect.name == "sqlite":
            # Checkpoint the write-ahead log once at the end, not after every chunk.
            connection.exec_driver_sql("PRAGMA wal_autocheckpoint=100000")
            connection.commit()
        importer = _Importer(session, definitions, actor_id)
        next(rows)  # the header
        pending: deque[Future[Any]] = deque()
        for index, batch in enumerate(_batches(rows, chunk_rows)):
            # The first chunk is checked here, while the helper process starts.
            check = _validate_inline if index == 0 else validate
            pending.append(check(columns, types, batch))
            if len(pending) > 1:
                importer.run_validated(pending.popleft().result(), report)
        while pending:
            importer.run_validated(pending.popleft().result(), report)
    return report


class _Importer:
    """Writes chunks of validated rows; remembers companies found by name between chunks."""

    def __init__(
        self, session: Session, definitions: Mapping[str, CustomField], actor_id: str | None
    ) -> None:
        self.session = session
        self.db: Database = session.info["db"]
        self.definitions = definitions
        self.actor_id = actor_id
        self.company_by_name: dict[str, str] = {}

    def run_validated(
        self,
        validated: tuple[list[ValidRow], list[tuple[int, Mapping[str, Any]]]],
        report: ImportReport,
    ) -> None:
        """Write a validated chunk and report the rows validation refused."""
        rows, rejected = validated
        for line, errors in rejected:
            report.reject(line, errors)
        if rows:
            self.run(rows, report)

    def run(self, rows: list[ValidRow], report: ImportReport) -> None:
        """One transaction per chunk; a chunk that lost a race for a unique value runs again."""
        for attempt in (1, 2):
            try:
                with self.session.begin():
                    chunk = _Chunk(self, self.session)
                    outcome = chunk.apply_all(rows)
                    chunk.write()
            except IntegrityError:
                if attempt == 2:
                    message = "The rows conflicted with concurrent changes; import them again."
                    for row in rows:
                        report.reject(row.line, {"_row": [message]})
                continue
            self.company_by_name.update(chunk.new_company_names)
            for kind in ("created", "updated", "unchanged"):
                setattr(report, kind, getattr(report, kind) + outcome.count(kind))
            for line, errors in chunk.rejected:
                report.reject(line, errors)
            return


class _Chunk:
    """The state of one chunk's contacts while its rows are applied in file order."""

    def __init__(self, importer: _Importer, session: Session) -> None:
        self.importer = importer
        self.session = session
        self.now = utcnow()
        self.by_key: dict[str, dict[str, Any]] = {}
        self.by_id: dict[str, dict[str, Any]] = {}
        self.freed_keys: set[str] = set()
        self.tag_by_key: dict[str, tuple[str, str]] = {}
        self.new_tags: dict[str, tuple[str, str]] = {}
        self.company_ids: set[str] = set()
        self.new_company_names: dict[str, str] = {}
        self.events: list[dict[str, Any]] = []
        self.rejected: list[tuple[int, Mapping[str, Any]]] = []

    def apply_all(self, rows: list[ValidRow]) -> list[str]:
        self._load(rows)
        outcome = []
        for row in rows:
            try:
                outcome.append(self._apply(row))
            except RowRejected as rejected:
                self.rejected.append((row.line, rejected.errors))
        return outcome

    def _load(self, rows: list[ValidRow]) -> None:
        """The contacts, tags and companies the rows name: a few SELECTs for the chunk."""
        keys = {domain.email_key(row.data.get("email")) for row in rows} - {None}
        ids = {row.data["id"] for row in rows if row.data.get("id")}
        statement = select(contacts).where(
            or_(contacts.c.email_key.in_(keys), contacts.c.id.in_(ids))
        )
        found = [dict(row._mapping) for row in self.session.execute(statement.with_for_update())]
        tag_names = domain.tag_names_by_contact(self.session, [state["id"] for state in found])
        for state in found:
            state.update(new=False, dirty=False, tags_changed=False)
            state["tags"] = sorted(tag_names.get(state["id"], []))
            self._index(state)
        wanted = {name.lower() for row in rows for name in row.data.get("tags", [])}
        for tag_id, name, key in self.session.execute(
            select(tags_table.c.id, tags_table.c.name, tags_table.c.key).where(
                tags_table.c.key.in_(wanted)
            )
        ):
            self.tag_by_key[key] = (tag_id, name)
        self._load_companies(rows)

    def _load_companies(self, rows: list[ValidRow]) -> None:
        ids = {row.data["company_id"] for row in rows if row.data.get("company_id")}
        table = Company.__table__
        if ids:
            query = select(table.c.id).where(table.c.id.in_(ids))
            self.company_ids = set(self.session.scalars(query))
        known = self.importer.company_by_name
        names = {row.company_name.lower() for row in rows if row.company_name} - set(known)
        if names:
            lowered = func.lower(table.c.name)
            query = (
                select(lowered, func.min(table.c.id)).where(lowered.in_(names)).group_by(lowered)
            )
            known.update({name: company_id for name, company_id in self.session.execute(query)})

    def _index(self, state: dict[str, Any]) -> None:
        self.by_id[state["id"]] = state
        if state["email_key"]:
            self.by_key[state["email_key"]] = state

    def _apply(self, row: ValidRow) -> str:
        data = dict(row.data)
        state = self._match(data)
        if data.get("company_id") and data["company_id"] not in self.company_ids:
            raise RowRejected({"company_id": ["No company with this id exists."]})
        values = data.pop("custom_fields", None)
        if values is not None or state is None:
            current = state["custom_fields"] if state else None
            data["custom_fields"] = self._checked_fields(values or {}, current)
        if row.company_name:
            data["company_id"] = self._company_id(row.company_name)
        if "tags" in data:
            data["tags"] = self._tag_names(data["tags"])
        if state is None:
            self._create(data)
            return "created"
        return self._update(state, data)

    def _match(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        """The contact this row is about: by email, else by id; None for a new one."""
        key = domain.email_key(data.get("email"))
        state = self.by_key.get(key) if key else None
        given_id = data.get("id")
        if given_id and state is not None and state["id"] != given_id:
            raise RowRejected({"id": [f"The email belongs to another contact: {state['id']}."]})
        if state is None and given_id:
            state = self.by_id.get(given_id)
            if state is not None and key and key in self.freed_keys and not state["new"]:
                message = "This email left another contact earlier in the file; import it again."
                raise RowRejected({"email": [message]})
        return state

    def _checked_fields(self, values: dict[str, Any], current: Any) -> dict[str, Any]:
        try:
            return domain.check_custom_fields(self.importer.definitions, values, current)
        except ApiError as error:
            nested = (error.errors or {}).get("custom_fields", {})
            raise RowRejected({CF_PREFIX + k: v for k, v in nested.items()}) from None

    def _company_id(self, name: str) -> str:
        """The company with this name (case-insensitive), created with its event if new."""
        key = name.lower()
        known = self.importer.company_by_name.get(key) or self.new_company_names.get(key)
        if known:
            return known
        try:
            company = domain.create_company(self.session, {"name": name})
        except ApiError as error:
            raise RowRejected({"company": [error.detail or error.title]}) from None
        self.new_company_names[key] = company.id
        return company.id

    def _tag_names(self, names: list[str]) -> list[str]:
        """The tags' display names, sorted; new tags are made at write time."""
        result: dict[str, str] = {}
        for name in names:
            key = name.lower()
            if key not in self.tag_by_key:
                self.tag_by_key[key] = self.new_tags[key] = (new_id(), name)
            result.setdefault(key, self.tag_by_key[key][1])
        return sorted(result.values())

    def _create(self, data: dict[str, Any]) -> None:
        state: dict[str, Any] = {
            "id": data.get("id") or new_id(),
            "first_name": data.get("first_name") or "",
            "last_name": data.get("last_name") or "",
            "email": data.get("email"),
            "email_key": domain.email_key(data.get("email")),
            "phone": data.get("phone"),
            "company_id": data.get("company_id"),
            "title": data.get("title"),
            "lifecycle_stage": data.get("lifecycle_stage") or "lead",
            "owner_id": data.get("owner_id") or self.importer.actor_id,
            "custom_fields": data["custom_fields"],
            "lifetime_value": Decimal("0.00"),
            "currency": "EUR",
            "last_activity_at": None,
            "version": 1,
            "created_at": self.now,
            "updated_at": self.now,
            "tags": data.get("tags", []),
            "new": True,
        }
        self._index(state)
        self._record("contact.created", state)

    def _update(self, state: dict[str, Any], data: dict[str, Any]) -> str:
        changed = [
            name
            for name in (*domain.CONTACT_FIELDS, "custom_fields", "tags")
            if name in data and data[name] != state[name]
        ]
        if not changed:
            return "unchanged"
        new_key = domain.email_key(data.get("email"))
        if "email" in changed and state["email_key"] != new_key:
            self.by_key.pop(state["email_key"], None)
            if not state["new"]:
                self.freed_keys.add(state["email_key"])
        state.update({name: data[name] for name in changed})
        state["email_key"] = domain.email_key(state["email"])
        state["version"] += 1
        state["updated_at"] = self.now
        state["dirty"] = True
        state["tags_changed"] = state.get("tags_changed") or "tags" in changed
        self._index(state)
        self._record("contact.updated", state, changed=changed)
        return "updated"

    def _record(self, event_type: str, state: dict[str, Any], **extra: Any) -> None:
        data = {**contact_view(SimpleNamespace(**state)), **extra}
        self.events.append(
            outbox_row(
                self.importer.db.service,
                event_type,
                state["id"],
                data,
                aggregate_version=state["version"],
            )
        )

    def write(self) -> None:
        """The chunk's changes in bulk: tags, updates, inserts, tag links, the outbox."""
        session = self.session
        if self.new_tags:
            rows = [
                {"id": tag_id, "name": name, "key": key, "created_at": self.now}
                for key, (tag_id, name) in self.new_tags.items()
            ]
            session.execute(insert(tags_table), rows)
        states = list(self.by_id.values())
        changed = [s for s in states if s.get("dirty") and not s["new"]]
        if changed:
            session.execute(_update_statement(), [_update_params(s) for s in changed])
        created = [s for s in states if s["new"]]
        if created:
            session.execute(insert(contacts), [_insert_params(s) for s in created])
        self._write_links(created, [s for s in changed if s["tags_changed"]])
        record_events(session, self.events)

    def _write_links(self, created: list[dict[str, Any]], retagged: list[dict[str, Any]]) -> None:
        if retagged:
            ids = [state["id"] for state in retagged]
            self.session.execute(delete(contact_tags).where(contact_tags.c.contact_id.in_(ids)))
        links = [
            {"contact_id": state["id"], "tag_id": self.tag_by_key[name.lower()][0]}
            for state in created + retagged
            for name in state["tags"]
        ]
        if links:
            self.session.execute(insert(contact_tags), links)


def _update_statement() -> Any:
    values = {name: bindparam(f"v_{name}") for name in UPDATED_COLUMNS}
    return update(contacts).where(contacts.c.id == bindparam("v_id")).values(values)


def _update_params(state: dict[str, Any]) -> dict[str, Any]:
    params = {f"v_{name}": state[name] for name in UPDATED_COLUMNS}
    params["v_id"] = state["id"]
    return params


def _insert_params(state: dict[str, Any]) -> dict[str, Any]:
    return {column.name: state[column.name] for column in contacts.columns}
