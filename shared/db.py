"""Engine and sessions per service: SQLite by default, PostgreSQL by URL, same code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool, StaticPool

from shared.idempotency import define_idempotency_table
from shared.inbox import define_inbox_table
from shared.outbox import define_outbox_table


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Deleted rows are overwritten, so an erased person leaves no bytes behind.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _begin_before_savepoint(connection: Any, _name: str) -> None:
    # pysqlite opens no transaction until the first write, so a first SAVEPOINT would
    # open one itself and its RELEASE would commit: savepoints would escape a rollback.
    # A transaction that uses savepoints writes, so take the write lock at once.
    if not connection.connection.dbapi_connection.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# Seconds a new PostgreSQL connection may take before it fails (libpq's connect_timeout).
POSTGRES_CONNECT_TIMEOUT = 10


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the pragmas and pool a CRM service needs on this database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            # Connections are kept (a new one per request cost its open and five PRAGMAs:
            # about a third of a contact read). An idle pooled connection holds no
            # transaction (the pool rolls back on return), so it blocks no writer.
            kwargs.setdefault("poolclass", QueuePool)
        else:
            kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "savepoint", _begin_before_savepoint)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    kwargs.setdefault("pool_pre_ping", True)
    # libpq waits forever for a server that accepts no connection; a worker would hang
    # instead of logging the outage and trying again.
    if "connect_timeout" not in parsed.query:
        kwargs.setdefault("connect_args", {"connect_timeout": POSTGRES_CONNECT_TIMEOUT})
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    return create_engine(url, **kwargs)


class Database:
    """One service's database: its engine, its sessions and its messaging tables."""

    def __init__(self, service: str, url: str, metadata: MetaData, **engine_kwargs: Any) -> None:
        self.service = service
        self.metadata = metadata
        self.outbox, self.inbox, self.idempotency = self.define_messaging_tables(metadata)
        self.engine = make_engine(url, **engine_kwargs)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, info={"db": self})

    @staticmethod
    def define_messaging_tables(metadata: MetaData) -> tuple[Any, Any, Any]:
        """The outbox, inbox and idempotency tables every service database holds."""
        return (
            define_outbox_table(metadata),
            define_inbox_table(metadata),
            define_idempotency_table(metadata),
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads alone (no ORM, nothing to commit): a hot GET's cheaper
        path than `session()`. Whatever it began is rolled back when it goes back."""
        with self.engine.connect() as connection:
            yield connection

    def new_session(self) -> Session:
        return self._sessions()

    def listen(self, name: str, handler: Any) -> None:
        """Listen to a session event (e.g. `do_orm_execute`) of this database's sessions."""
        event.listen(self._sessions, name, handler)

    def create_all(self) -> None:
        self.metadata.create_all(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def answers(self) -> bool:
        """Whether the database takes a query now (False while it is unreachable)."""
        try:
            self.ping()
        except (DBAPIError, OSError):
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()


def database_of(session: Session) -> Database:
    """The Database a session was made by (so shared helpers find their tables)."""
    return session.info["db"]


def take_write_lock(session: Session) -> None:
    """On SQLite (which ignores FOR UPDATE) take the database write lock before reading.

    Without it two processes could read the same row, decide on what they read and both
    write (two conversions of one lead, two CSAT ratings). PostgreSQL locks rows with
    FOR UPDATE instead.
    """
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    if not connection.connection.dbapi_connection.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# How long a claim that must skip what others hold may wait for any lock (PostgreSQL).
CLAIM_LOCK_TIMEOUT_MS = 2000


@contextmanager
def no_lock_wait(session: Session) -> Iterator[None]:
    """Within the block a PostgreSQL lock wait fails after CLAIM_LOCK_TIMEOUT_MS.

    A claim reads with SKIP LOCKED, so it never needs to wait: if it ever does (SKIP LOCKED
    lost, a table lock held), it fails with an error instead of hanging its worker.
    """
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        yield
        return
    connection.exec_driver_sql(f"SET LOCAL lock_timeout = {CLAIM_LOCK_TIMEOUT_MS}")
    yield
    connection.exec_driver_sql("SET LOCAL lock_timeout = DEFAULT")
