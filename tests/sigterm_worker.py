"""A tiny service for tests/test_worker_sigterm.py: one slow handler, run by run_worker.

Run as `python -m tests.sigterm_worker` with the usual settings in the environment
(`CRM_AMQP_URL`, `CRM_AMQP_PREFIX`, `SIGTERMTEST_DATABASE_URL`...) and `SIGTERMTEST_CALLS`,
a file the handler appends each event id to when it starts (outside the transaction,
so a redelivery would show there even though the inbox would hide its effect).
"""

from __future__ import annotations

import os
import time

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.config import load_settings
from shared.db import Database
from shared.events import Envelope
from shared.worker import run_worker

SERVICE = "sigtermtest"
SLOW = "note.created"  # a real type: the consumer takes it only from its producer
HANDLER_SECONDS = 1.0


def metadata() -> sa.MetaData:
    result = sa.MetaData()
    sa.Table("effects", result, sa.Column("event_id", sa.String(36), primary_key=True))
    return result


def slow(session: Session, envelope: Envelope) -> None:
    with open(os.environ["SIGTERMTEST_CALLS"], "a", encoding="utf-8") as calls:
        calls.write(envelope.id + "\n")
    time.sleep(HANDLER_SECONDS)  # SIGTERM arrives here
    effects = session.info["db"].metadata.tables["effects"]
    session.execute(effects.insert().values(event_id=envelope.id))


def main() -> None:
    settings = load_settings(SERVICE)
    db = Database(SERVICE, settings.database_url, metadata())
    run_worker(settings, db, {SLOW: slow})


if __name__ == "__main__":
    main()
