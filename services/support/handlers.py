"""Events the support service reacts to: erasures and merges of contacts (to be written)."""

from __future__ import annotations

from shared.bus import Handler


def handlers() -> dict[str, Handler]:
    """Every event type this service consumes, with its handler."""
    return {}
