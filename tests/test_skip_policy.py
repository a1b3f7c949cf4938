"""Under CI a skip fails the run unless conftest.py's ALLOWED_SKIPS names it, and any of the
usual spellings of CI counts (a tiny test file run by pytest with the top conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ALLOWED_SKIPS, allowed_skip, running_in_ci

ROOT = Path(__file__).resolve().parents[1]
TINY = """
import pytest

def test_runs():
    pass

def test_skips():
    pytest.skip("no tool here")

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_to_fail():
    assert False
"""
MODULE_SKIP = """
import pytest

pytest.importorskip("a_module_nobody_installed")

def test_never_collected():
    pass
"""


def run_tiny(
    tmp_path: Path, source: str, ci: str | None, processes: str = "0"
) -> subprocess.CompletedProcess:
    """pytest on one file with the project's top conftest.py as a plugin, CI as given."""
    (tmp_path / "test_tiny.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the project's options
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q"]
        + ["-n", processes, "test_tiny.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("ci", ["true", "1", "yes", "on", "TRUE", "On"])
def test_every_spelling_of_ci_counts(ci: str) -> None:
    assert running_in_ci({"CI": ci})


@pytest.mark.parametrize("ci", ["", "0", "false", "no", "off"])
def test_ci_off_or_unset_does_not_count(ci: str) -> None:
    assert not running_in_ci({"CI": ci}) and not running_in_ci({})


@pytest.mark.parametrize(("ci", "processes"), [("true", "0"), ("1", "0"), ("on", "2")])
def test_an_unlisted_skip_fails_a_ci_run_and_is_named(
    tmp_path: Path, ci: str, processes: str
) -> None:
    done = run_tiny(tmp_path, TINY, ci, processes)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "skips CI does not allow" in done.stdout
    assert "test_tiny.py::test_skips: no tool here" in done.stdout
    assert "test_expected_to_fail" not in done.stdout.split("skips CI does not allow")[1]


def test_a_module_skipped_at_collection_fails_a_ci_run(tmp_path: Path) -> None:
    done = run_tiny(tmp_path, MODULE_SKIP, "yes")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "a_module_nobody_installed" in done.stdout.split("skips CI does not allow")[1]


def test_outside_ci_a_skip_is_only_reported(tmp_path: Path) -> None:
    done = run_tiny(tmp_path, TINY, None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skips CI does not allow" not in done.stdout


def test_the_allowed_skips_are_the_postgresql_only_ones_and_compose(tmp_path: Path) -> None:
    sqlite_only = "services/support/tests/test_sweep.py::" + (
        "test_a_sweep_skips_a_ticket_another_transaction_holds"
    )
    assert allowed_skip(f"{sqlite_only}[sqlite]")
    assert allowed_skip(f"{sqlite_only}[sqlite]@crm-run")  # as xdist's loadgroup names it
    assert allowed_skip(f"{sqlite_only}[postgresql]") is None
    assert allowed_skip("tests/faults/test_broker_outage.py::test_anything") is None
    assert all(reason for reason in ALLOWED_SKIPS.values())
