"""The worker's SLA sweep: warnings at 80% and breaches, each published once (to be written)."""

from __future__ import annotations

from shared.db import Database


def sweep_sla(db: Database) -> int:
    """Publish due SLA warnings and breaches; how many were published."""
    return 0
