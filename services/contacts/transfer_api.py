"""Contacts in and out as CSV: `POST /contacts/import` and `GET /contacts/export`."""

from __future__ import annotations

from typing import IO, Any

from flask import Blueprint, Response, jsonify, request, stream_with_context

from services.contacts import csv_rows, exporting, importing
from services.contacts.queries import list_statement
from shared.auth import current_principal
from shared.openapi import documented
from shared.web import ApiError, current_db

transfer_api = Blueprint("transfer_api", __name__, url_prefix="/api/v1/contacts")

CSV_TYPES = frozenset({"text/csv", "application/csv", "text/plain"})
TITLES = {400: "Bad Request", 413: "Content Too Large", 422: "Unprocessable Entity"}
EXPORT_IGNORED = frozenset({"sort", "limit", "cursor"})
CSV_UPLOAD = {
    "required": True,
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        },
    },
}


@transfer_api.post("/import")
@documented(
    requestBody=CSV_UPLOAD,
    responses={"415": {"$ref": "#/components/responses/UnsupportedMediaType"}},
)
def import_contacts() -> Any:
    """Upsert contacts from a CSV upload; answers a report of what each row did."""
    principal = current_principal()
    source = _uploaded_csv()
    try:
        report = importing.import_contacts(current_db(), source, actor_id=principal.subject)
    except csv_rows.BadImportFile as error:
        raise ApiError(error.status, TITLES[error.status], error.detail, error.errors) from None
    finally:
        source.close()
    return jsonify(report.as_dict())


def _uploaded_csv() -> IO[bytes]:
    """The CSV as a seekable binary file: a multipart field `file` or a text/csv body."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "Bad Request", "Send the CSV in the multipart form field 'file'")
        return upload.stream
    if request.mimetype in CSV_TYPES:
        return csv_rows.spool(request.stream)
    raise ApiError(
        415,
        "Unsupported Media Type",
        "Send the CSV as text/csv or as multipart/form-data with a field 'file'",
    )


@transfer_api.get("/export")
def export_contacts() -> Response:
    """Every contact (or those matching the list filters) as a streamed CSV file."""
    args = {k: v for k, v in request.args.items() if k not in EXPORT_IGNORED}
    where = list_statement(args).whereclause
    chunks = exporting.export_csv(current_db(), where)
    response = Response(stream_with_context(chunks), mimetype="text/csv")
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = 'attachment; filename="contacts.csv"'
    return response
