"""Events the marketing service reacts to: each part of the service brings its own."""

from __future__ import annotations

import importlib

from shared.bus import Handler
from shared.config import Settings, service_settings

# Modules with a `handlers(settings)` function: each part of the service adds its own here.
PARTS = ("services.marketing.replica", "services.marketing.consent")


def handlers(settings: Settings | None = None) -> dict[str, Handler]:
    """Every event type this service consumes, with its handler (one owner per type)."""
    settings = settings or service_settings("marketing")
    merged: dict[str, Handler] = {}
    for path in PARTS:
        part = importlib.import_module(path)
        for event_type, handler in part.handlers(settings).items():
            if event_type in merged:
                raise RuntimeError(f"two marketing handlers for {event_type}")
            merged[event_type] = handler
    return merged
