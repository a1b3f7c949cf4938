"""The marketing service's handler registry: every part's events, shared types in turn."""

from __future__ import annotations

from typing import Any

from services.marketing import handlers as registry
from shared.testing import make_event


def test_every_part_brings_its_events(app: Any) -> None:
    found = registry.handlers(app.extensions["crm.settings"])
    assert {"contact.created", "contact.erased", "email.opened", "email.bounced"} <= set(found)


def test_two_handlers_of_one_type_run_in_turn() -> None:
    seen: list[str] = []

    def first(_session: Any, event: Any) -> None:
        seen.append(f"first {event.type}")

    def second(_session: Any, event: Any) -> None:
        seen.append(f"second {event.type}")

    handle = registry.in_turn([first, second])
    handle(None, make_event("email.opened", {}))
    assert seen == ["first email.opened", "second email.opened"]
    assert handle.__name__ == "first+second"
