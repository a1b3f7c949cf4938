"""Events the gateway reacts to: none (it owns users and only publishes `user.*`)."""

from __future__ import annotations

from shared.bus import Handler


def handlers() -> dict[str, Handler]:
    """The gateway consumes nothing, so its worker opens no queue."""
    return {}
