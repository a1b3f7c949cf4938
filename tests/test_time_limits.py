"""A test that hangs fails instead of holding the run forever (pytest-timeout, pyproject)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HANGS = """
import threading

def test_waits_forever():
    threading.Event().wait()
"""


def test_every_test_has_a_time_limit_that_lets_fixtures_clean_up(
    pytestconfig: pytest.Config,
) -> None:
    assert float(pytestconfig.getini("timeout")) == 300
    assert pytestconfig.getini("timeout_method") == "signal"  # teardown still runs


def test_a_hanging_test_fails_at_its_limit(tmp_path: Path) -> None:
    (tmp_path / "test_hangs.py").write_text(HANGS)
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 2\ntimeout_method = signal\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_hangs.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert "Timeout (>2.0s)" in done.stdout
