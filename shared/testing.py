"""Helpers every service's tests use the same way (shipped with the library, as nameko does)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll until `predicate()` holds; fail the test after `timeout` seconds (never hang)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting {what}".strip()
        time.sleep(0.02)
