"""Events the notifications service reacts to (each part adds its handlers here)."""

from __future__ import annotations

from shared.bus import Handler
from shared.config import Settings


def handlers(settings: Settings) -> dict[str, Handler]:
    """Every event type this service consumes, with its handler."""
    return {}
