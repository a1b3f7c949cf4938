"""Every environment variable the code reads is documented in README's Configuration table.

The names are found statically: the read patterns (`os.environ.get("X")`, `getenv`,
`environ["X"]`, `environ.setdefault`, and `shared.config`'s `_env/_int/_float/_list/
_delays(env, "X")`) over the source of shared/, gateway/, services/ and deploy/. A name
made per service (`f"CRM_{name.upper()}_URL"`) may be documented once as its template
(`CRM_<SERVICE>_URL`) or for every service of `shared.cli.SERVICES`.
"""

from __future__ import annotations

import re
from pathlib import Path

from shared.cli import SERVICES

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("shared", "gateway", "services", "deploy")
NAME = r"""f?["']([A-Za-z_{}().]+)["']"""
READS = (
    re.compile(r"\b_(?:env|int|float|list|delays)\(\s*\w+\s*,\s*" + NAME),
    re.compile(r"\benviron\.(?:get|setdefault|pop)\(\s*" + NAME),
    re.compile(r"\benviron\[\s*" + NAME + r"\s*\]"),
    re.compile(r"\bgetenv\(\s*" + NAME),
)
PLACEHOLDER = re.compile(r"\{[^}]*\}")


def source_files() -> list[Path]:
    files = []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "tests" not in path.relative_to(ROOT).parts:
                files.append(path)
    return files


def names_read(text: str) -> set[str]:
    """The variable names (per-service ones as templates with `<SERVICE>`) read in `text`."""
    found = set()
    for pattern in READS:
        for match in pattern.finditer(text):
            found.add(PLACEHOLDER.sub("<SERVICE>", match.group(1)))
    return {name for name in found if re.fullmatch(r"[A-Z<][A-Z0-9_<>]*", name)}


def read_by_code() -> dict[str, set[str]]:
    """Each name the code reads, with the files that read it."""
    names: dict[str, set[str]] = {}
    for path in source_files():
        for name in names_read(path.read_text(encoding="utf-8")):
            names.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return names


def documented() -> set[str]:
    """The names in the first column of README's "## Configuration" table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("|"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([A-Z<][A-Z0-9_<>]*)`", first_cell))
    return names


def is_documented(name: str, table: set[str]) -> bool:
    if name in table:
        return True
    if "<SERVICE>" not in name:
        return False
    return all(name.replace("<SERVICE>", service.upper()) in table for service in SERVICES)


def test_the_scan_finds_the_known_reads() -> None:
    """A guard on the scanner itself: if these vanish, its patterns have gone stale."""
    names = read_by_code()
    for expected in (
        "CRM_AMQP_URL",
        "CRM_RATE_LIMIT_API",
        "CRM_CORS_ORIGINS",
        "<SERVICE>_DATABASE_URL",
        "CRM_<SERVICE>_URL",
        "CRM_<SERVICE>_PORT",
        "CRM_BIND",
        "GUNICORN_WORKERS",
        "GUNICORN_GRACEFUL_TIMEOUT",
        "PROMETHEUS_MULTIPROC_DIR",
    ):
        assert expected in names, expected


def test_the_scanner_reads_each_pattern() -> None:
    text = """
        _int(env, "CRM_A", 1); _env(environ, f"CRM_{name.upper()}_B", "x")
        os.environ.get("CRM_C"); os.environ["CRM_D"]; os.getenv("CRM_E", "1")
        os.environ.setdefault(f"{service.upper()}_F", "y"); _list(env, "CRM_G")
    """
    assert names_read(text) == {
        "CRM_A",
        "CRM_<SERVICE>_B",
        "CRM_C",
        "CRM_D",
        "CRM_E",
        "<SERVICE>_F",
        "CRM_G",
    }


def test_every_setting_the_code_reads_is_in_the_readme_table() -> None:
    table = documented()
    missing = {
        name: sorted(files)
        for name, files in sorted(read_by_code().items())
        if not is_documented(name, table)
    }
    assert not missing, f"add these to README.md's Configuration table: {missing}"
