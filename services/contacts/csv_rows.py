"""Reading a contacts CSV file: its header, its records, each validated like an API body.

Nothing here touches the database, so a helper process can validate a big file's chunks
while the importing process writes.
"""

from __future__ import annotations

import csv
import functools
import io
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from types import SimpleNamespace
from typing import IO, Any

from marshmallow import ValidationError

from services.contacts.models import CustomField
from services.contacts.schemas import ContactInSchema

CF_PREFIX = "cf."
SCHEMA_COLUMNS = (
    "id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "title",
    "lifecycle_stage",
    "owner_id",
    "company_id",
)
IMPORT_COLUMNS = (*SCHEMA_COLUMNS, "company", "tags")
# Kept by the service: accepted (an export imports again) and ignored.
SERVER_COLUMNS = ("lifetime_value", "currency", "last_activity_at", "created_at", "updated_at")
NAME_COLUMNS = ("first_name", "last_name", "email")
# Spreadsheets run a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
TRUE_WORDS = frozenset({"true", "yes", "1", "y"})
FALSE_WORDS = frozenset({"false", "no", "0", "n"})


class BadImportFile(Exception):
    """The upload as a whole cannot be imported (nothing was written)."""

    def __init__(self, status: int, detail: str, errors: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = dict(errors) if errors else None


@dataclass
class ValidRow:
    """A record that passed validation: its line, its values, a company named by name."""

    line: int
    data: dict[str, Any]
    company_name: str | None


class RowRejected(Exception):
    """A record that failed validation, with the errors per column."""

    def __init__(self, errors: Mapping[str, Any]) -> None:
        super().__init__("row rejected")
        self.errors = errors


# --- the file --------------------------------------------------------------------


def spool(stream: IO[bytes], memory_bytes: int = 1024 * 1024) -> IO[bytes]:
    """Copy a one-way stream (a request body) into a seekable temporary file."""
    copy = tempfile.SpooledTemporaryFile(max_size=memory_bytes)
    shutil.copyfileobj(stream, copy, 64 * 1024)
    copy.seek(0)
    return copy  # type: ignore[return-value]


def csv_records(source: IO[bytes]) -> Iterator[tuple[int, list[str]]]:
    """(line number where the record starts, cells) of every non-blank record."""
    source.seek(0)
    text = io.TextIOWrapper(source, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text)
        line = 0
        for cells in reader:
            start, line = line + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                yield start, cells
    finally:
        text.detach()


def read_header(source: IO[bytes], definitions: Mapping[str, CustomField]) -> tuple[list[str], int]:
    """The file's columns and record count, after proving it is UTF-8 CSV (else BadImportFile)."""
    records = 0
    try:
        with closing(csv_records(source)) as rows:
            first = next(rows, None)
            if first is None:
                raise BadImportFile(400, "The file is empty: a header row and rows are expected")
            columns = _columns(first[1], definitions)
            for _ in rows:
                records += 1
    except UnicodeDecodeError as error:
        raise BadImportFile(
            400, f"The file is not UTF-8 text (byte {error.start} of a block cannot be decoded)"
        ) from None
    except csv.Error as error:
        raise BadImportFile(400, f"The file is not valid CSV: {error}") from None
    return columns, records


def _columns(header: list[str], definitions: Mapping[str, CustomField]) -> list[str]:
    columns = [name.strip().lower() for name in header]
    unknown = [
        name
        for name in columns
        if name not in IMPORT_COLUMNS
        and name not in SERVER_COLUMNS
        and not (name.startswith(CF_PREFIX) and name[len(CF_PREFIX) :] in definitions)
    ]
    if unknown:
        known = ", ".join(IMPORT_COLUMNS) + ", cf.<custom field name>"
        raise BadImportFile(
            422,
            f"Unknown columns: {', '.join(unknown)}. The first row must name the columns: {known}",
            {"columns": [f"Unknown column: {name!r}" for name in unknown]},
        )
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise BadImportFile(422, f"Columns named twice: {', '.join(duplicates)}")
    if not set(columns) & set(NAME_COLUMNS):
        raise BadImportFile(422, "The header must name first_name, last_name or email")
    return columns


def _clean(cell: str) -> str:
    """A cell without surrounding blanks and without the quote export adds before formulas."""
    value = cell.strip()
    if value[:1] == "'" and value[1:2] in FORMULA_STARTS:
        return value[1:]
    return value


def _cell_value(definition: Any, text: str) -> Any:
    """A custom field cell as the type check_custom_fields expects."""
    if definition.type == "boolean":
        word = text.lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise ValueError("Expected true or false.")
    if definition.type == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError("Expected a whole number.") from None
    if definition.type == "multiselect":
        return [part.strip() for part in text.split(";") if part.strip()]
    return text


@functools.cache
def row_schema(columns: tuple[str, ...]) -> ContactInSchema:
    """The API's contact schema limited to the file's columns (a third of the work per row)."""
    names = [name for name in columns if name in SCHEMA_COLUMNS]
    names += ["tags"] if "tags" in columns else []
    names += ["custom_fields"] if any(c.startswith(CF_PREFIX) for c in columns) else []
    return ContactInSchema(only=names)


def _parse_row(
    schema: ContactInSchema,
    line: int,
    columns: list[str],
    cells: list[str],
    definitions: Mapping[str, Any],
) -> ValidRow:
    """One record validated like an API body (empty cells are not given), or RowRejected."""
    if len(cells) > len(columns):
        message = f"The row has {len(cells)} cells but the header names {len(columns)} columns."
        raise RowRejected({"_row": [message]})
    body: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    company_name = None
    for column, cell in zip(columns, cells, strict=False):
        value = _clean(cell)
        if not value or column in SERVER_COLUMNS:
            continue
        if column == "tags":
            body["tags"] = [tag.strip() for tag in value.split(";") if tag.strip()]
        elif column == "company":
            company_name = value
        elif column.startswith(CF_PREFIX):
            name = column[len(CF_PREFIX) :]
            try:
                body.setdefault("custom_fields", {})[name] = _cell_value(definitions[name], value)
            except ValueError as error:
                errors[column] = [str(error)]
        else:
            body[column] = value
    try:
        data = schema.load(body)
    except ValidationError as error:
        errors = {**_messages(error), **errors}
    if company_name is not None:
        errors.update(_company_name_errors(company_name, body))
    if errors:
        raise RowRejected(errors)
    return ValidRow(line, data, company_name)


def _messages(error: ValidationError) -> dict[str, Any]:
    return error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}


def _company_name_errors(name: str, body: Mapping[str, Any]) -> dict[str, list[str]]:
    if len(name) > 200:
        return {"company": ["Longer than maximum length 200."]}
    if body.get("company_id"):
        return {"company": ["Give company (a name) or company_id, not both."]}
    return {}


def validate_records(
    columns: list[str], types: Mapping[str, Any], records: list[tuple[int, list[str]]]
) -> tuple[list[ValidRow], list[tuple[int, Mapping[str, Any]]]]:
    """Validate a chunk of records: the rows that pass, and (line, errors) of the others.

    A pure function of its arguments, so a helper process can run it for big files.
    """
    schema = row_schema(tuple(columns))
    rows, rejected = [], []
    for line, cells in records:
        try:
            rows.append(_parse_row(schema, line, columns, cells, types))
        except RowRejected as error:
            rejected.append((line, error.errors))
    return rows, rejected


def plain_types(definitions: Mapping[str, CustomField]) -> dict[str, SimpleNamespace]:
    """What row parsing needs of the custom fields, in a form another process can receive."""
    return {name: SimpleNamespace(type=field.type) for name, field in definitions.items()}
