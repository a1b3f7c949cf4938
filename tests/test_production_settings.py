"""No published secret is ever accepted: with CRM_ENV=production the real `crm` command
refuses to start any process on a missing, short or published secret or a default admin
password, with one clear line on stderr and a non-zero exit; on one machine `crm run`
makes its own secrets, kept 0600 under CRM_DATA_DIR, and never prints the password."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shared import cli, local_secrets
from tests.crm_run import ROOT

GOOD_SECRET = "k" * 16 + "-random-enough-for-a-test-" + "q" * 16
FORMER_DEV_SECRET = "dev-only-secret-change-me-in-production-please"  # was in shared/config
K8S_PLACEHOLDER = "REPLACE-ME-from-the-secret-manager"


def crm(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """The real `crm` command, in an environment of only these settings."""
    return python_module(tmp_path, "shared.cli", *args, **settings)


def python_module(
    tmp_path: Path, module: str, *args: str, **settings: str
) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CRM_")}
    env |= {"CRM_DATA_DIR": str(tmp_path / "var"), "CRM_ENV": "production", **settings}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_refused(answer: subprocess.CompletedProcess[str], *words: str) -> None:
    assert answer.returncode != 0, answer
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1, answer.stderr  # one clear line, no traceback
    assert lines[0].startswith("error: "), lines
    assert all(word in lines[0] for word in words), lines
    assert answer.stdout == ""  # refused before doing anything


def test_production_with_the_defaults_refuses_to_start(tmp_path):
    assert_refused(crm(tmp_path, "run"), "CRM_JWT_SECRET", "not set")
    assert not (tmp_path / "var" / local_secrets.JWT_SECRET_FILE).exists()  # none made up


@pytest.mark.parametrize(
    "command",
    [["gateway", "api"], ["contacts", "api"], ["sales", "worker"], ["gateway", "migrate"]],
    ids=" ".join,
)
def test_every_process_refuses_a_short_or_published_secret(tmp_path, command):
    assert_refused(crm(tmp_path, *command), "CRM_JWT_SECRET")
    assert_refused(crm(tmp_path, *command, CRM_JWT_SECRET="x" * 31), "shorter than 32 bytes")
    for published in (FORMER_DEV_SECRET, K8S_PLACEHOLDER):
        assert_refused(crm(tmp_path, *command, CRM_JWT_SECRET=published), "placeholder")


def test_a_worker_started_without_crm_refuses_too(tmp_path):
    # `crm run`'s Procfile starts workers as `python -m services.<name>.worker`.
    answer = python_module(tmp_path, "services.notifications.worker", CRM_JWT_SECRET="short")
    assert_refused(answer, "shorter than 32 bytes")


@pytest.mark.parametrize("password", ["admin", "password", "changeme", "Admin", None])
def test_the_first_admin_is_never_made_with_a_default_or_no_password(tmp_path, password):
    settings = {"CRM_JWT_SECRET": GOOD_SECRET}
    if password is not None:
        settings["CRM_ADMIN_PASSWORD"] = password
    assert_refused(crm(tmp_path, "run", **settings), "CRM_ADMIN_PASSWORD")


def test_a_service_refuses_a_default_admin_password_wherever_it_is_given(tmp_path):
    settings = {"CRM_JWT_SECRET": GOOD_SECRET, "CRM_ADMIN_PASSWORD": "admin"}
    assert_refused(crm(tmp_path, "contacts", "migrate", **settings), "CRM_ADMIN_PASSWORD")


def test_the_app_itself_refuses_without_the_command(monkeypatch):
    # gunicorn or `flask --app` build the app without `crm`: the same line, as an exit.
    from gateway.app import create_app

    monkeypatch.setenv("CRM_ENV", "production")
    monkeypatch.setenv("CRM_JWT_SECRET", "short")
    with pytest.raises(SystemExit) as refused:
        create_app({"database_url": "sqlite://"})
    assert "shorter than 32 bytes" in str(refused.value.code)


def test_crm_run_keeps_a_random_secret_and_admin_password_readable_by_its_owner_only(tmp_path):
    environ: dict[str, str] = {}
    kept = local_secrets.provide_local_secrets(tmp_path, environ)
    assert set(kept) == {"CRM_JWT_SECRET", "CRM_ADMIN_PASSWORD"}
    for name, path in kept.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.read_text().strip() == environ[name]
    assert len(environ["CRM_JWT_SECRET"].encode()) >= 32
    again: dict[str, str] = {}
    local_secrets.provide_local_secrets(tmp_path, again)
    assert again == environ  # the next start reads the same ones
    other = tmp_path / "other"
    assert local_secrets.provide_local_secrets(other, {})["CRM_JWT_SECRET"]
    assert (other / "jwt-secret").read_text() != (tmp_path / "jwt-secret").read_text()
    chosen = {"CRM_JWT_SECRET": GOOD_SECRET, "CRM_ADMIN_PASSWORD": "my own"}
    assert local_secrets.provide_local_secrets(tmp_path / "set", dict(chosen)) == {}


def test_crm_run_says_where_the_admin_password_is_never_the_password(tmp_path, monkeypatch, capsys):
    # An environment of its own (what crm run adds to it must not leak into other tests).
    environ = {"CRM_DATA_DIR": str(tmp_path), "PATH": os.environ.get("PATH", "")}
    monkeypatch.setattr(os, "environ", environ)
    monkeypatch.setattr(cli, "check_broker", lambda url: True)
    monkeypatch.setattr(cli, "migrate", lambda name: None)
    started = []
    monkeypatch.setattr(cli.os, "execvp", lambda *args: started.append(args))
    import gateway.app

    monkeypatch.setattr(gateway.app, "bootstrap_admin", lambda db, settings: None)
    monkeypatch.setattr(
        gateway.app, "create_app", lambda: type("App", (), {"extensions": {"crm.db": None}})()
    )

    cli.run_all(None)

    out = capsys.readouterr().out
    password = (tmp_path / "admin-password").read_text().strip()
    assert password and password not in out
    assert str(tmp_path / "admin-password") in out
    assert environ["CRM_JWT_SECRET"] == (tmp_path / "jwt-secret").read_text().strip()
    assert started  # honcho would start every process with that environment
