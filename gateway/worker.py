"""The gateway worker: relays the outbox (`user.created`, `user.updated`, `user.deleted`)."""

from __future__ import annotations

from gateway.app import make_database, make_settings
from gateway.handlers import handlers
from shared.worker import run_worker


def main() -> None:
    settings = make_settings()
    run_worker(settings, make_database(settings), handlers())


if __name__ == "__main__":
    main()
