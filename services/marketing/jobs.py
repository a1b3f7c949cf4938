"""What the marketing worker runs on timers (scheduled campaigns, delayed automations)."""

from __future__ import annotations

from services.marketing.campaign_fanout import campaign_timer
from shared.config import Settings
from shared.db import Database
from shared.worker import Timer


def timers(settings: Settings, db: Database) -> list[Timer]:
    """The worker's timers (each part adds its own here)."""
    return [campaign_timer(settings, db)]
