"""Events the sales service reacts to: erasures, merges, email engagement."""

from __future__ import annotations

from shared.bus import Handler


def handlers() -> dict[str, Handler]:
    """Every event type this service consumes, with its handler."""
    return {}
