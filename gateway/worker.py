"""The gateway worker: relays the outbox (`user.*` events), purges past rate-limit windows."""

from __future__ import annotations

from gateway.app import make_database, make_settings
from gateway.handlers import handlers
from gateway.rate_limits import purge_expired
from shared.db import Database
from shared.worker import Timer, run_worker

PURGE_EVERY_SECONDS = 60.0


def timers(db: Database) -> list[Timer]:
    """What the worker does on the clock: drop the counters of ended rate-limit windows."""
    return [Timer(PURGE_EVERY_SECONDS, lambda: purge_expired(db), "purge rate-limit windows")]


def main() -> None:
    settings = make_settings()
    db = make_database(settings)
    run_worker(settings, db, handlers(), timers=timers(db))


if __name__ == "__main__":
    main()
