"""What the marketing worker runs on timers (scheduled campaigns, delayed automations)."""

from __future__ import annotations

from services.marketing.automation_runs import due_runs_timer
from services.marketing.automation_triggers import inactive_timer
from services.marketing.campaign_fanout import campaign_timer
from shared.config import Settings
from shared.db import Database
from shared.worker import Timer


def timers(settings: Settings, db: Database) -> list[Timer]:
    """The worker's timers (each part adds its own here)."""
    return [
        campaign_timer(settings, db),
        due_runs_timer(settings, db),
        inactive_timer(settings, db),
    ]
