"""Migration 0002: users made before it start at version 1."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from shared.db import make_engine
from shared.migrations import upgrade

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def test_users_made_before_the_version_column_start_at_version_1(database_url):
    upgrade(MIGRATIONS, database_url, "0001")
    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO users (id, email, email_key, name, role, active, password_hash,"
                " created_at, updated_at) VALUES ('u1', 'a@example.com', 'a@example.com', 'A',"
                " 'admin', true, 'hash', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )

    upgrade(MIGRATIONS, database_url)

    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version FROM users")).scalar_one() == 1
    engine.dispose()
