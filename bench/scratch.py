"""A PostgreSQL database of a benchmark's own, made before a run and dropped after it."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import sqlalchemy as sa

LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# The code has no default signing secret: the apps a benchmark builds sign with one of its own.
os.environ.setdefault("CRM_JWT_SECRET", secrets.token_urlsafe(48))


@contextlib.contextmanager
def postgres_database(name: str) -> Iterator[str | None]:
    """The URL of a fresh database `name`, or None (said in one line) if no server answers.

    The server: `CRM_BENCH_POSTGRES_URL`, else `CRM_TEST_POSTGRES_URL`, else the local one.
    """
    server = os.environ.get("CRM_BENCH_POSTGRES_URL") or os.environ.get("CRM_TEST_POSTGRES_URL")
    server_url = sa.make_url(server or LOCAL_POSTGRES).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        print(f"PostgreSQL not reachable ({type(error).__name__}): skipped")
        admin.dispose()
        yield None
        return
    try:
        yield server_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
