"""Events the marketing service reacts to: each part of the service brings its own.

Several parts may take the same event type (the replica counts an `email.opened` as an
engagement fact, campaigns count it in their stats): their handlers run one after the
other, in the order of PARTS, in the consumer's one transaction.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from sqlalchemy.orm import Session

from shared.bus import Handler
from shared.config import Settings, service_settings
from shared.events import Envelope

# Modules with a `handlers(settings)` function: each part of the service adds its own here.
PARTS = (
    "services.marketing.replica",
    "services.marketing.consent",
    "services.marketing.campaign_stats",
    "services.marketing.stage_history",
    "services.marketing.open_deals",
    # After the replica: its contact conditions see the contact as the event left it.
    "services.marketing.automation_triggers",
)


def in_turn(steps: Sequence[Handler]) -> Handler:
    """One handler running `steps` one after the other."""

    def handle(session: Session, event: Envelope) -> None:
        for step in steps:
            step(session, event)

    handle.__name__ = handle.__qualname__ = "+".join(step.__name__ for step in steps)
    return handle


def handlers(settings: Settings | None = None) -> dict[str, Handler]:
    """Every event type this service consumes, with its handler."""
    settings = settings or service_settings("marketing")
    steps: dict[str, list[Handler]] = {}
    for path in PARTS:
        part = importlib.import_module(path)
        for event_type, handler in part.handlers(settings).items():
            steps.setdefault(event_type, []).append(handler)
    return {
        event_type: found[0] if len(found) == 1 else in_turn(found)
        for event_type, found in steps.items()
    }
