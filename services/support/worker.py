"""The support worker: consumes its queue, relays its outbox, sweeps the SLA clocks."""

from __future__ import annotations

from services.support.app import make_database, make_settings
from services.support.handlers import handlers
from services.support.sweep import sweep_sla
from shared.worker import Timer, run_worker


def main() -> None:
    settings = make_settings()
    db = make_database(settings)
    every = float(settings.extra.get("sla_sweep_seconds", 15))
    timer = Timer(every, lambda: sweep_sla(db), name="sla sweep")
    run_worker(settings, db, handlers(), timers=[timer])


if __name__ == "__main__":
    main()
