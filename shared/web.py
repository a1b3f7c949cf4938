"""Flask helpers every service uses: problem+json errors, request ids, health, metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from marshmallow import Schema, ValidationError
from sqlalchemy.exc import DataError, IntegrityError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream

from shared.config import Settings, startup_problem
from shared.db import Database
from shared.events import isoformat
from shared.logs import configure_logging, correlation_id
from shared.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# A `\ud800`..`\udfff` escape: half of a surrogate pair, alone not valid Unicode.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Percent-encoding still in a path after the server decoded it once (`%252e` is `%2e`):
# a second decoder further on would read another path than the one checked here.
_STILL_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_DOT_SEGMENTS = frozenset({"", ".", ".."})
# JSON is UTF-8 (RFC 8259); a body declared in another charset is not read as if it were.
JSON_CHARSETS = frozenset({"utf-8", "utf8"})


class ApiError(Exception):
    """An error the client caused or must know about, answered as problem+json."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        errors: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = dict(errors) if errors else None
        self.headers = dict(headers or {})


def not_found(what: str, ident: Any) -> ApiError:
    return ApiError(404, "Not Found", f"{what} {ident} does not exist")


def conflict(detail: str, errors: Mapping[str, Any] | None = None) -> ApiError:
    return ApiError(409, "Conflict", detail, errors)


def invalid(errors: Mapping[str, Any], detail: str = "The request has invalid fields") -> ApiError:
    return ApiError(422, "Unprocessable Entity", detail, errors)


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    errors: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> Response:
    """A problem+json response (RFC 9457); `extensions` adds members of the problem's own."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    body.update(extensions or {})
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def refuse_a_cut_body() -> None:
    """413 if a body without Content-Length (chunked) reached the limit.

    werkzeug stops reading such a body at MAX_CONTENT_LENGTH and raises only on a read
    after that: without this check the first bytes would pass for the whole body.
    """
    stream = request.stream
    if request.content_length is None and isinstance(stream, LimitedStream):
        if stream.is_exhausted:
            raise RequestEntityTooLarge()


def declares_json() -> bool:
    """Whether the request says its body is JSON (`application/json` or `*/*+json`) in UTF-8."""
    if not request.is_json:
        return False
    charset = request.mimetype_params.get("charset")
    return charset is None or charset.lower() in JSON_CHARSETS


def json_body() -> Any:
    """The request body as JSON: 415 unless declared JSON, 400 saying why it is not JSON.

    Every reader of the body goes through here, so a check and the view never read two
    different parses of one body (a `text/plain` body was JSON for one and None for the
    other).
    """
    data = request.get_data(cache=True)
    refuse_a_cut_body()
    if not data:
        raise ApiError(400, "Bad Request", "The request body is empty; JSON was expected")
    if not declares_json():
        raise ApiError(
            415,
            "Unsupported Media Type",
            "Send the body as JSON: Content-Type: application/json (UTF-8)",
        )
    try:
        data = request.get_json(silent=True, force=True)
    except RecursionError:  # "[[[[..." deeper than the parser's stack
        raise ApiError(400, "Bad Request", "The JSON is nested too deeply") from None
    if data is None:
        raise ApiError(400, "Bad Request", "The request body is not valid JSON")
    if _SURROGATE_ESCAPE.search(request.get_data(cache=True)) and _holds_surrogate(data):
        # A pair makes one character; one alone cannot be stored or encoded (a 500 later).
        raise ApiError(400, "Bad Request", "The JSON holds a lone surrogate (\\ud800-\\udfff)")
    return data


def _holds_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_holds_surrogate(key) or _holds_surrogate(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_surrogate(item) for item in value)
    return False


def form_fields() -> dict[str, Any]:
    """An HTML form's fields, each given once (422 for files or a field given twice)."""
    if request.files:
        raise invalid({name: ["Files are not accepted."] for name in request.files})
    refuse_a_cut_body()
    raw = request.form.to_dict(flat=False)
    repeated = sorted(name for name, values in raw.items() if len(values) > 1)
    if repeated:
        raise invalid({name: ["Given more than once."] for name in repeated})
    return {name: values[0] for name, values in raw.items()}


def load_body(schema: Schema, *, partial: bool = False) -> Any:
    """Parse and validate the JSON body with a marshmallow schema (422 on invalid fields)."""
    data = json_body()
    if not isinstance(data, dict):
        raise ApiError(400, "Bad Request", "The request body must be a JSON object")
    return load_or_422(schema, data, partial=partial)


def load_or_422(schema: Schema, data: Any, *, partial: bool = False) -> Any:
    try:
        return schema.load(data, partial=partial)
    except ValidationError as error:
        messages = error.messages if isinstance(error.messages, dict) else {"_": error.messages}
        raise invalid(messages) from error


def expected_version() -> int | None:
    """The version an `If-Match: "3"` header expects, if one was sent."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    tag = header.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise ApiError(400, "Bad Request", 'If-Match must be an ETag such as "3"')
    return int(tag)


def with_etag(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["ETag"] = f'"{body["version"]}"'
    return response


def check_version(current: int, expected: int | None) -> None:
    """Optimistic concurrency: a stale If-Match is a 409 (API.md)."""
    if expected is not None and expected != current:
        raise conflict(
            f"The record changed since version {expected}; it is at version {current} now"
        )


def parse_args(schema: Schema, args: Any = None, *, drop_empty: bool = False) -> Any:
    """Validate query parameters (a werkzeug MultiDict, default: this request's) with a
    schema: 422 on bad, unknown or repeated ones. `drop_empty` treats `?x=` as absent."""
    args = request.args if args is None else args
    repeated = sorted(name for name in args if len(args.getlist(name)) > 1)
    if repeated:
        raise invalid({name: ["Give this parameter once."] for name in repeated})
    given = {k: v for k, v in args.items() if not (drop_empty and v == "")}
    return load_or_422(schema, given)


def created(body: Any, location: str) -> Response:
    response = jsonify(body)
    response.status_code = 201
    response.headers["Location"] = location
    return response


def created_with_etag(body: dict[str, Any], location: str) -> Response:
    """201 with the new record's Location and its version as ETag."""
    response = with_etag(body, 201)
    response.headers["Location"] = location
    return response


def no_content() -> Response:
    return Response(status=204)


class CrmJSONProvider(DefaultJSONProvider):
    """Datetimes as ISO 8601 UTC with Z; Decimals as strings (money is never a float)."""

    sort_keys = False

    @staticmethod
    def default(o: Any) -> Any:
        from datetime import date, datetime
        from decimal import Decimal

        if isinstance(o, datetime):
            return isoformat(o)
        if isinstance(o, date):
            return o.isoformat()
        if isinstance(o, Decimal):
            return str(o)
        if isinstance(o, uuid.UUID):
            return str(o)
        return DefaultJSONProvider.default(o)


def path_problem(path: str) -> str | None:
    """Why a decoded URL path is not in its normal form, or None if it is.

    Refused: `.` and `..` segments, empty ones (`//`; one trailing `/` is fine), a
    backslash, and percent-encoding left after decoding. Each would be read as another
    path by whatever normalises it later (urllib3 collapses `..` before sending), so a
    check on this path (which route, which token, which role) would not hold for the
    path finally served.
    """
    if "\\" in path:
        return "a backslash"
    if _STILL_ENCODED.search(path):
        return "percent-encoding left after decoding (encoded twice)"
    if path in ("", "/"):
        return None
    if not path.startswith("/"):
        return "no leading slash"
    # One trailing slash is dropped (`/contacts/` is `/contacts`); `//` alone is not.
    inner = path[1:].removesuffix("/") if len(path) > 2 else path[1:]
    bad = next((part for part in inner.split("/") if part in _DOT_SEGMENTS), None)
    if bad is None:
        return None
    return f"a '{bad}' segment" if bad else "an empty segment (//)"


def refuse_unnormalised_path() -> None:
    """400 unless the request's path, as the server decoded it, is in its normal form."""
    # PATH_INFO, not request.path: werkzeug strips leading slashes from that one.
    wsgi_environ = request.environ  # the request's WSGI keys, not the process environment
    refused = path_problem(wsgi_environ.get("PATH_INFO", ""))
    if refused:
        raise ApiError(400, "Bad Request", f"The URL path holds {refused}")


def _start_request() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _REQUEST_ID_PATTERN.match(incoming) else str(uuid.uuid4())
    g.request_token = correlation_id.set(g.request_id)
    g.request_started = time.perf_counter()
    refuse_unnormalised_path()  # first: every later hook and the routing trust the path
    if "\x00" in request.path:
        raise ApiError(400, "Bad Request", "The URL cannot contain NUL (%00) characters")
    bad = sorted({name for name, value in request.args.items(multi=True) if "\x00" in value})
    if bad:  # PostgreSQL cannot compare with such text: refuse it here, not with a 500
        raise invalid({name: ["Cannot contain NUL (%00) characters."] for name in bad})


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    service = current_app.config["CRM_SERVICE"]
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    started = g.get("request_started")
    if started is not None:
        elapsed = time.perf_counter() - started
        HTTP_LATENCY.labels(service, request.method, endpoint).observe(elapsed)
        log.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={"status": response.status_code, "duration_ms": round(elapsed * 1000, 2)},
        )
    HTTP_REQUESTS.labels(service, request.method, endpoint, str(response.status_code)).inc()
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def _teardown_request(_error: BaseException | None) -> None:
    token = g.pop("request_token", None)
    if token is not None:
        correlation_id.reset(token)


def _handle_api_error(error: ApiError) -> Response:
    return problem(error.status, error.title, error.detail, error.errors, error.headers)


def _handle_integrity_error(_error: IntegrityError) -> Response:
    # Two writers raced for the same unique value; the loser gets a clean 409.
    return problem(409, "Conflict", "The change conflicts with an existing record")


def _handle_data_error(error: DataError) -> Response:
    # Input that passed validation but not the database (a value out of its range, text
    # it can't store): the client's fault, so a 422, and the transaction was rolled back.
    log.warning("the database refused a value: %s", type(error.orig).__name__)
    return problem(
        422, "Unprocessable Entity", "A value is out of the range the database can store"
    )


def _handle_http_exception(error: HTTPException) -> Response:
    headers = {}
    if error.code == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    detail = error.description
    if error.code == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        detail = f"The request body is larger than the limit of {limit} bytes"
    return problem(error.code or 500, error.name, detail, headers=headers)


def _handle_unexpected(error: Exception) -> Response:
    log.exception("unhandled error: %s", type(error).__name__)
    return problem(500, "Internal Server Error", "Something went wrong on our side")


def init_app(
    app: Flask,
    settings: Settings,
    db: Database | None,
    *,
    dead_letters: bool = True,
    ops_port: int | None = None,
) -> None:
    """Give a service's Flask app the shared conventions: errors, ids, logs, health, metrics.

    `dead_letters`: False for a service that consumes nothing (it has no DLQ to measure).
    `ops_port`: /ready and /metrics answer only on connections to this port (shared.ops).
    """
    from shared.ops import ops_blueprint  # here: shared.ops answers with this module's problem()

    configure_logging(settings.service, settings.log_level)
    app.json = CrmJSONProvider(app)
    app.config["CRM_SERVICE"] = settings.service
    app.config["CRM_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["crm.settings"] = settings
    if db is not None:
        app.extensions["crm.db"] = db
    app.url_map.strict_slashes = False
    # No redirect to a path with `//` merged: behind the gateway its Location would name
    # this process's own address, and `/t/c//evil.example` must not answer with a redirect.
    app.url_map.merge_slashes = False
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_teardown_request)
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(DataError, _handle_data_error)
    app.register_error_handler(IntegrityError, _handle_integrity_error)
    app.register_error_handler(Exception, _handle_unexpected)
    app.register_blueprint(ops_blueprint(settings, db, dead_letters, ops_port))
    problem = startup_problem(settings)
    if problem is not None:  # no published or missing secret, ever (exits with that line)
        raise SystemExit(f"error: {problem}")


def current_db() -> Database:
    return current_app.extensions["crm.db"]


def current_settings() -> Settings:
    return current_app.extensions["crm.settings"]
