"""The marketing worker: consumes its queue, relays its outbox, sends what is due."""

from __future__ import annotations

from services.marketing.app import make_database, make_settings
from services.marketing.handlers import handlers
from services.marketing.jobs import timers
from shared.worker import run_worker


def main() -> None:
    settings = make_settings()
    db = make_database(settings)
    run_worker(settings, db, handlers(settings), timers=timers(settings, db))


if __name__ == "__main__":
    main()
