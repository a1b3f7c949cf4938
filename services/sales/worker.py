"""The sales worker: consumes its queue and relays its outbox."""

from __future__ import annotations

from services.sales.app import make_database, make_settings
from services.sales.handlers import handlers
from shared.worker import run_worker


def main() -> None:
    settings = make_settings()
    run_worker(settings, make_database(settings), handlers())


if __name__ == "__main__":
    main()
