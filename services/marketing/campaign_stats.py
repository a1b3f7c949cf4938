"""Campaign statistics from notifications' and consent events (to be written)."""

from __future__ import annotations

from shared.bus import Handler
from shared.config import Settings


def handlers(settings: Settings) -> dict[str, Handler]:
    return {}
