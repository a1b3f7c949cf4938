"""The lock file and pyproject.toml agree: `make run` and `make test` install the lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PINNED = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)")


# The lock `make` installs (runtime and dev), and the one the image installs (runtime).
LOCKS = {"requirements.lock": True, "requirements-runtime.lock": False}


def _declared(dev: bool = True) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + (project["optional-dependencies"]["dev"] if dev else [])
    return [Requirement(line) for line in lines]


def _locked(lock: str = "requirements.lock") -> dict[str, tuple[str, list[str]]]:
    """name -> (version, the lines of its entry)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current: list[str] = []
    for line in (ROOT / lock).read_text().splitlines():
        match = PINNED.match(line)
        if match:
            current = [line]
            entries[canonicalize_name(match[1])] = (match[2], current)
        elif line.startswith(" ") and current:
            current.append(line)
    return entries


@pytest.mark.parametrize("lock", LOCKS)
def test_every_dependency_is_locked_at_a_version_pyproject_allows(lock):
    locked = _locked(lock)
    for requirement in _declared(LOCKS[lock]):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is in pyproject.toml but not in the lock: make lock"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"the lock pins {name}=={version}, pyproject.toml asks {requirement}: make lock"
        )


@pytest.mark.parametrize("lock", LOCKS)
def test_the_lock_names_no_direct_dependency_pyproject_dropped(lock):
    declared = {canonicalize_name(requirement.name) for requirement in _declared(LOCKS[lock])}
    for name, (_, lines) in _locked(lock).items():
        if any("crm (pyproject.toml)" in line for line in lines):
            assert name in declared, f"{name} is locked for pyproject.toml, which no longer asks"


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_package_is_pinned_by_hash(lock):
    for name, (_, lines) in _locked(lock).items():
        assert any("--hash=sha256:" in line for line in lines), f"{name} has no hash"


@pytest.mark.parametrize("lock", LOCKS)
def test_jinja2_has_the_sandbox_fixes(lock):
    version = _locked(lock)["jinja2"][0]
    assert tuple(int(part) for part in version.split(".")[:3]) >= (3, 1, 6)
