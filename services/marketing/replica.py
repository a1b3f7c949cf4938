"""The contact replica and engagement facts (to be written)."""

from __future__ import annotations

from shared.bus import Handler
from shared.config import Settings


def handlers(settings: Settings) -> dict[str, Handler]:
    return {}
