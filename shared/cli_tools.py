"""The `crm` operator commands: `users create`, `outbox status`, `contacts import`, `seed`.

`shared.cli` runs the system; these work beside it. `users create` and `outbox status`
open the services' databases (from each service's settings); `contacts import` and `seed`
go through the gateway API like any other client.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import IO, Any

import requests

from shared.config import load_settings
from shared.local_secrets import ADMIN_PASSWORD_FILE

HTTP_TIMEOUT = 30.0  # seconds: signing in and the seeder's calls
IMPORT_TIMEOUT = 600.0  # seconds to wait for the import report once the file is sent
REPORTED_ERRORS = 5  # rejected rows printed by `crm contacts import`


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _complain(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# --- crm users create ----------------------------------------------------------------------


def read_password(from_stdin: bool) -> str:
    """The new password: the first line of stdin, else asked twice without echo."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    try:
        password = getpass.getpass("Password: ")
        again = getpass.getpass("Password (again): ")
    except EOFError:
        raise ValueError("no password given (pipe one in with --password-stdin)") from None
    if again != password:
        raise ValueError("the passwords do not match")
    return password


def create_user(args: argparse.Namespace) -> int:
    """Add a user to the gateway's database, as the API's `POST /users` would."""
    from argon2 import PasswordHasher
    from marshmallow import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from gateway import domain
    from gateway.app import make_database, make_settings
    from gateway.schemas import UserCreateSchema
    from shared.web import ApiError

    try:
        password = read_password(args.password_stdin)
        fields = UserCreateSchema().load(
            {"email": args.email, "name": args.name, "role": args.role, "password": password}
        )
    except ValidationError as error:
        for name, messages in error.normalized_messages().items():
            _complain(f"error: {name}: {' '.join(messages)}")
        return 2
    except ValueError as error:
        _complain(f"error: {error}")
        return 2
    db = make_database(make_settings())
    try:
        with db.session() as session:
            user = domain.create_user(session, PasswordHasher(), fields)
    except ApiError as error:
        _complain(f"error: {error.detail}")
        return 1
    except SQLAlchemyError as error:
        _complain(
            f"error: the gateway database refused ({error.__class__.__name__}); "
            "is it migrated (`crm gateway migrate`)?"
        )
        return 1
    finally:
        db.dispose()
    _say(f"created user {user.email} ({user.role}), id {user.id}")
    return 0


# --- crm outbox status ---------------------------------------------------------------------


def describe_age(seconds: float) -> str:
    """A duration as people say it: `42s`, `3m 20s`, `5h 02m`, `2d 04h`."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def _missing_sqlite_file(database_url: str) -> str | None:
    """The path of a SQLite database that does not exist yet (opening it would make it)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return None if Path(url.database).exists() else url.database


def outbox_line(service: str, database_url: str) -> str:
    """One service's unsent events and the age of the oldest, as one line."""
    from sqlalchemy import MetaData
    from sqlalchemy.exc import SQLAlchemyError

    from shared.db import Database
    from shared.outbox import backlog

    missing = _missing_sqlite_file(database_url)
    if missing is not None:
        return f"{service}: no database yet ({missing})"
    db = Database(service, database_url, MetaData())  # only the messaging tables are needed
    try:
        with db.session() as session:
            count, age = backlog(session)
    except SQLAlchemyError as error:
        return f"{service}: unreadable ({error.__class__.__name__}: not migrated or not reachable)"
    finally:
        db.dispose()
    oldest = "-" if age is None else f"{describe_age(age)} ago"
    return f"{service}: {count} unsent, oldest {oldest}"


def outbox_status(_args: argparse.Namespace) -> int:
    """Print every service's outbox backlog."""
    from shared.cli import SERVICES

    for service in SERVICES:
        _say(outbox_line(service, load_settings(service).database_url))
    return 0


# --- the gateway API, as a client ----------------------------------------------------------


def default_api_url() -> str:
    from shared.cli import service_port

    return f"http://127.0.0.1:{service_port('gateway')}"


def api_base(url: str) -> str:
    """`.../api/v1` of a gateway given as `http://host:port` or with the base path already."""
    url = url.rstrip("/")
    return url if url.endswith("/api/v1") else f"{url}/api/v1"


def problem_text(response: requests.Response) -> str:
    """An error answer in one line: status, detail and the fields' messages."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}: {response.text[:300]}"
    detail = body.get("detail") or body.get("title") or ""
    errors = body.get("errors")
    return f"{response.status_code} {detail}" + (f" {errors}" if errors else "")


def sign_in(api: str, email: str, password: str) -> requests.Session:
    """A requests session carrying a bearer token from `POST /auth/token`."""
    session = requests.Session()
    answer = session.post(
        f"{api}/auth/token", json={"email": email, "password": password}, timeout=HTTP_TIMEOUT
    )
    if answer.status_code != 200:
        session.close()
        raise RuntimeError(f"signing in as {email} failed: {problem_text(answer)}")
    session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return session


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """--api, --email and --password (the admin of CRM_ADMIN_* by default)."""
    parser.add_argument("--api", default=None, help="the gateway URL (default: this machine's)")
    parser.add_argument("--email", default=None, help="sign in as (default: CRM_ADMIN_EMAIL)")
    parser.add_argument(
        "--password",
        default=None,
        help="default: CRM_ADMIN_PASSWORD (prefer it: arguments show in the process list)",
    )


def client_session(args: argparse.Namespace) -> tuple[str, requests.Session]:
    """The API base URL and a signed-in session, from the options or the environment."""
    settings = load_settings("gateway")
    api = api_base(args.api or default_api_url())
    email = args.email or settings.admin_email
    password = args.password if args.password is not None else settings.admin_password
    kept = settings.data_dir / ADMIN_PASSWORD_FILE  # what `crm run` made, on one machine
    if not password and kept.is_file():
        password = kept.read_text().strip()
    return api, sign_in(api, email, password)


# --- crm contacts import -------------------------------------------------------------------


class ProgressReader:
    """A file that counts what is read of it on a progress bar (requests reads it in blocks)."""

    def __init__(self, source: IO[bytes], size: int, bar: Any) -> None:
        self._source, self._size, self._bar = source, size, bar

    def __len__(self) -> int:  # requests sends a Content-Length, not chunks
        return self._size

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        self._bar.update(len(chunk))
        return chunk


def upload_csv(session: requests.Session, api: str, path: Path) -> requests.Response:
    """Stream the file to `POST /contacts/import` as text/csv with a bar of bytes sent."""
    from tqdm import tqdm

    size = path.stat().st_size
    with (
        path.open("rb") as source,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"sending {path.name}",
            file=sys.stderr,
            disable=None,  # no bar when stderr is not a terminal
        ) as bar,
    ):
        return session.post(
            f"{api}/contacts/import",
            data=ProgressReader(source, size, bar),
            headers={"Content-Type": "text/csv"},
            timeout=(HTTP_TIMEOUT, IMPORT_TIMEOUT),
        )


def report_lines(report: dict[str, Any]) -> list[str]:
    """The import report for people: the counts, then the first rejected rows."""
    counts = ", ".join(
        f"{report.get(name, 0)} {name}" for name in ("created", "updated", "unchanged", "rejected")
    )
    lines = [f"{report.get('rows', 0)} rows: {counts}"]
    errors = report.get("errors") or []
    for error in errors[:REPORTED_ERRORS]:
        reasons = "; ".join(
            f"{field}: {' '.join(messages) if isinstance(messages, list) else messages}"
            for field, messages in error.get("errors", {}).items()
        )
        lines.append(f"  row {error.get('row')}: {reasons}")
    hidden = report.get("rejected", 0) - min(len(errors), REPORTED_ERRORS)
    if hidden > 0:
        lines.append(f"  ... and {hidden} more rejected rows")
    return lines


def import_contacts(args: argparse.Namespace) -> int:
    """Upload a CSV of contacts through the gateway and print the report."""
    if args.file is None:
        _complain("error: name the CSV file: crm contacts import FILE")
        return 2
    path = Path(args.file)
    if not path.is_file():
        _complain(f"error: no file {path}")
        return 2
    try:
        api, session = client_session(args)
        with session:
            answer = upload_csv(session, api, path)
    except (RuntimeError, requests.RequestException) as error:
        _complain(f"error: {error}")
        return 1
    if answer.status_code != 200:
        _complain(f"error: the import was refused: {problem_text(answer)}")
        return 1
    for line in report_lines(answer.json()):
        _say(line)
    return 0


# --- crm seed ------------------------------------------------------------------------------


def seed(args: argparse.Namespace) -> int:
    """Fill a running system with the demo dataset through the gateway API."""
    from shared import demo_seed

    if not args.demo:
        _complain("error: say --demo (the demo dataset is the only one there is)")
        return 2
    try:
        api, session = client_session(args)
        with session:
            client = demo_seed.SeedClient(session, api)
            summary = demo_seed.seed_demo(client)
    except (RuntimeError, requests.RequestException) as error:
        _complain(f"error: {error}")
        return 1
    for line in summary:
        _say(line)
    return 1 if demo_seed.failures(client.tally) else 0


# --- the commands --------------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """Add `users`, `outbox`, `contacts import` and `seed` to the `crm` parser's commands."""
    from shared.auth import ROLES

    users = commands.add_parser("users", help="manage the gateway's users")
    user_actions = users.add_subparsers(dest="action", required=True)
    create = user_actions.add_parser("create", help="add a user (password from stdin or asked)")
    create.add_argument("--email", required=True)
    create.add_argument("--name", default="")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    create.set_defaults(func=create_user)

    outbox = commands.add_parser("outbox", help="the services' unsent events")
    outbox.add_argument("action", choices=["status"])
    outbox.set_defaults(func=outbox_status)

    seeding = commands.add_parser("seed", help="fill a running system with demo data")
    seeding.add_argument("--demo", action="store_true", help="the demo dataset")
    add_client_options(seeding)
    seeding.set_defaults(func=seed)


def add_contacts_import(contacts: argparse.ArgumentParser) -> None:
    """`crm contacts import FILE` beside `crm contacts api|worker|migrate`."""
    contacts.add_argument("file", nargs="?", help="import: the CSV file")
    add_client_options(contacts)
