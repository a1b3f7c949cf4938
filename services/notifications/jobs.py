"""What the notifications worker runs on timers: sending mail, reminders, webhooks."""

from __future__ import annotations

from services.notifications.reminders import reminder_timer
from services.notifications.sender import sending_timer
from services.notifications.webhook_delivery import delivery_timer
from shared.config import Settings
from shared.db import Database
from shared.worker import Timer


def timers(settings: Settings, db: Database) -> list[Timer]:
    """The worker's timers: due email, due reminders, due webhook deliveries."""
    return [sending_timer(settings, db), reminder_timer(settings, db), delivery_timer(settings, db)]
