"""The database helpers behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from shared.db import Database

metadata = sa.MetaData()
items = sa.Table("items", metadata, sa.Column("id", sa.Integer, primary_key=True))


@pytest.fixture
def db(database_url):
    database = Database("test", database_url, metadata)
    database.create_all()
    yield database
    database.dispose()


def count(db) -> int:
    with db.engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(items)).scalar_one()


def test_a_released_savepoint_is_undone_by_the_outer_rollback(db):
    with pytest.raises(RuntimeError), db.session() as session:
        with session.begin_nested():
            session.execute(items.insert().values(id=1))
        raise RuntimeError("roll back everything")
    assert count(db) == 0


def test_a_failed_savepoint_keeps_the_rest_of_the_transaction(db):
    with db.session() as session:
        session.execute(items.insert().values(id=1))
        with pytest.raises(sa.exc.IntegrityError), session.begin_nested():
            session.execute(items.insert().values(id=1))
        session.execute(items.insert().values(id=2))
    assert count(db) == 2


def test_sqlite_enforces_foreign_keys_and_pg_urls_get_psycopg(tmp_path):
    from shared.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert make_engine("postgresql://u@localhost/db").dialect.driver == "psycopg"


def test_a_postgresql_server_that_never_answers_fails_the_connection_in_time(monkeypatch):
    import socket
    import time

    from shared import db as shared_db

    monkeypatch.setattr(shared_db, "POSTGRES_CONNECT_TIMEOUT", 1)
    with socket.socket() as silent:  # accepts the TCP connection (backlog), never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        engine = shared_db.make_engine(f"postgresql://u@127.0.0.1:{port}/db", pool_pre_ping=False)
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError):
            engine.connect()
        assert time.monotonic() - started < 10


def test_a_lock_wait_inside_no_lock_wait_fails_in_time_and_ends_with_the_block(postgres_url):
    import time

    from shared.db import CLAIM_LOCK_TIMEOUT_MS, no_lock_wait

    db = Database("test", postgres_url, metadata)
    db.create_all()
    try:
        with db.session() as session:
            session.execute(items.insert().values(id=1))
        held = sa.select(items.c.id).where(items.c.id == 1).with_for_update()
        with db.engine.connect() as holder, holder.begin():
            holder.execute(held)
            with db.session() as session:
                started = time.monotonic()
                with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                    with no_lock_wait(session):
                        session.execute(held)  # a claim that lost SKIP LOCKED would wait
                waited = time.monotonic() - started
        assert CLAIM_LOCK_TIMEOUT_MS / 1000 <= waited < 10
        with db.session() as session:
            with no_lock_wait(session):
                assert session.scalar(sa.text("SHOW lock_timeout")) == "2s"
            assert session.scalar(sa.text("SHOW lock_timeout")) == "0"
    finally:
        db.dispose()
