"""What each service's database holds, counted cheaply: the proof that refused requests
changed nothing (no row written, no event recorded in an outbox)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

State = dict[str, dict[str, int]]
# Tables a refused request may change by design: a refused sign-in counts toward its lockout.
COUNTS_REFUSALS = {("gateway", "login_failures")}


class DatabaseState:
    """Row counts of every table (the outbox among them) of every service's schema."""

    def __init__(self, databases: dict[str, str]) -> None:
        self.engines = {
            name: sa.create_engine(url, poolclass=sa.pool.NullPool)
            for name, url in databases.items()
        }

    def read(self) -> State:
        return {name: self._counts(engine) for name, engine in self.engines.items()}

    @staticmethod
    def _counts(engine: sa.Engine) -> dict[str, int]:
        with engine.connect() as connection:
            tables = sa.inspect(connection).get_table_names()
            return {
                table: connection.execute(
                    sa.select(sa.func.count()).select_from(sa.table(table))
                ).scalar_one()
                for table in tables
            }

    def settled(self, timeout: float = 90) -> State:
        """The state once two reads a second apart agree (earlier writes' events handled)."""
        deadline = time.monotonic() + timeout
        last = self.read()
        while True:
            time.sleep(1)
            now = self.read()
            if now == last:
                return now
            assert time.monotonic() < deadline, "the databases never stopped changing"
            last = now

    @contextmanager
    def unchanged(self) -> Iterator[None]:
        """The block must leave every table's row count as it found it."""
        before = self.settled()
        yield
        after = self.read()
        changed = {
            f"{service}.{table}": (count, after[service].get(table))
            for service, counts in before.items()
            for table, count in counts.items()
            if after[service].get(table) != count and (service, table) not in COUNTS_REFUSALS
        }
        assert not changed, f"refused requests changed rows (before, after): {changed}"

    def dispose(self) -> None:
        for engine in self.engines.values():
            engine.dispose()
