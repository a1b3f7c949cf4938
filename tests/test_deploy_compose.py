"""The container image and docker-compose.yml: checked by Compose when it is here, and by
structure always (every service's migrate/api/worker, dependencies, health checks,
databases, commands, no committed secrets, a non-root image)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url

from shared.cli import SERVICES, parser
from shared.config import SERVICE_PORTS, load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
INIT_SQL = ROOT / "deploy/compose/init-databases.sql"

INFRASTRUCTURE = {"rabbitmq", "postgres", "mailpit"}
# The only values a secret may default to in the committed file: the documented
# development defaults ("" falls back to shared/config.py's own dev default).
DEV_DEFAULTS = {"", "crm"}
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASS|TOKEN|KEY)$")
# ${VAR}, ${VAR-default}, ${VAR:-default}, and ${VAR?message} / ${VAR:?message} (required).
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^${}]*))?\}")


# ---- helpers ----


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def crm_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services().items() if name not in INFRASTRUCTURE}


def interpolate(value: str, environ: dict[str, str] | None = None) -> str:
    """Compose's `${VAR}`, `${VAR-default}` and `${VAR:-default}`, nested, innermost first."""
    environ = environ or {}

    def one(match: re.Match[str]) -> str:
        name, operator, default = match.groups()
        if name in environ and (environ[name] != "" or operator not in (":-", ":?")):
            return environ[name]
        if operator and operator.endswith("?"):
            return ""  # Compose refuses to start (test_secrets_are_required_with_no_default)
        return default or ""

    while True:
        replaced = _VARIABLE.sub(one, value)
        if replaced == value:
            return replaced
        value = replaced


def environment(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as its container gets it with no `.env` file."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value)) for key, value in env.items()}


def depends_on(svc: dict[str, Any]) -> dict[str, str]:
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def init_databases() -> set[str]:
    sql = re.sub(r"--[^\n]*", "", INIT_SQL.read_text())
    return {m.lower() for m in re.findall(r"CREATE\s+DATABASE\s+\"?(\w+)\"?", sql, re.I)}


def dockerfile_stages() -> list[dict[str, Any]]:
    """The Dockerfile's stages: base image (build args resolved), name, instructions."""
    text = DOCKERFILE.read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    logical = re.sub(r"\\\n", " ", "\n".join(lines))
    args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for line in logical.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        if keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append({"image": image, "name": name, "instructions": []})
            continue
        stages[-1]["instructions"].append((keyword, rest))
    return stages


def last(stage: dict[str, Any], keyword: str) -> str | None:
    found = [rest for kw, rest in stage["instructions"] if kw == keyword]
    return found[-1] if found else None


# ---- 1. Compose itself, when the docker client has the compose plugin ----


def compose_command() -> list[str] | None:
    """Compose v2 as the docker client's plugin or as its own binary, if either runs here."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            done = subprocess.run(
                [*command, "version"], capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return command
    return None


def test_docker_compose_config_passes():
    command = compose_command()
    if command is None:  # allowed under CI: see ALLOWED_SKIPS in conftest.py
        pytest.skip("no Compose v2 here (docker compose plugin or docker-compose binary)")
    # The variables the file requires (${VAR:?...}), as an operator's .env would give them.
    variables = _VARIABLE.findall(COMPOSE_FILE.read_text())
    required = {name: "x" * 48 for name, operator, _ in variables if operator.endswith("?")}
    done = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), **required},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_compose_file_matches_the_compose_specification_schema():
    vendor = pytest.importorskip(
        "check_jsonschema.builtin_schemas.vendor",
        reason="check-jsonschema (which ships the Compose spec schema) is not installed",
    )
    import jsonschema

    schema = json.loads(files(vendor).joinpath("compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


# ---- 2. structure, always ----


def test_every_service_has_its_migrate_api_and_worker():
    names = set(services())
    for name, spec in SERVICES.items():
        assert services()[f"{name}-migrate"]["command"] == [name, "migrate"]
        assert services()[f"{name}-api"]["command"] == [name, "api"]
        if spec.has_worker:
            assert services()[f"{name}-worker"]["command"] == [name, "worker"]
        else:
            assert f"{name}-worker" not in names
    assert INFRASTRUCTURE <= names
    assert services()["rabbitmq"]["image"].startswith("rabbitmq:3.13-management")
    assert services()["postgres"]["image"].startswith("postgres:16")


def test_every_crm_process_runs_the_image_of_the_dockerfile():
    for name, svc in crm_services().items():
        assert svc["build"]["context"] == ".", name
        assert svc.get("build", {}).get("dockerfile", "Dockerfile") == "Dockerfile", name
        assert svc["image"] == crm_services()["gateway-api"]["image"], name


def test_every_command_is_one_the_crm_command_accepts():
    for name, svc in crm_services().items():
        if "entrypoint" in svc:
            continue
        args = parser().parse_args(svc["command"])  # exits (SystemExit) on a bad command
        assert args.func is not None, name


def test_the_admin_is_made_by_a_command_the_gateway_has():
    admin = services()["gateway-admin"]
    assert admin["entrypoint"] == ["flask", "--app", "gateway.app"]
    assert admin["command"] == ["bootstrap-admin"]
    from gateway.app import create_app

    app = create_app({"database_url": "sqlite://"})
    try:
        assert "bootstrap-admin" in app.cli.commands
    finally:
        app.extensions["gateway.http"].close()
        app.extensions["crm.db"].dispose()


def test_every_dependency_exists_with_the_right_condition():
    names = set(services())
    for name, svc in services().items():
        for target, condition in depends_on(svc).items():
            assert target in names, f"{name} depends on unknown {target}"
            if target.endswith(("-migrate", "-admin", "-users")):
                assert condition == "service_completed_successfully", (name, target)
            if target in ("rabbitmq", "postgres"):
                assert condition == "service_healthy", (name, target)
            if condition == "service_healthy":
                assert "healthcheck" in services()[target], f"{target} has no healthcheck"
    for name in SERVICES:
        migrate = depends_on(services()[f"{name}-migrate"])
        assert migrate == {
            "rabbitmq": "service_healthy",
            "postgres": "service_healthy",
            "broker-users": "service_completed_successfully",  # it connects as its own user
        }
        assert f"{name}-migrate" in depends_on(services()[f"{name}-api"])


def test_workers_start_after_every_queue_is_declared():
    # A worker's relay publishes: a consumer's queue that does not exist yet loses events.
    every_migrate = {f"{name}-migrate" for name in SERVICES}
    for name, spec in SERVICES.items():
        if spec.has_worker:
            deps = depends_on(services()[f"{name}-worker"])
            assert every_migrate <= set(deps), name
            assert deps["rabbitmq"] == "service_healthy"


def test_infrastructure_health_checks():
    assert services()["rabbitmq"]["healthcheck"]["test"] == [
        "CMD",
        "rabbitmq-diagnostics",
        "-q",
        "ping",
    ]
    assert "pg_isready" in services()["postgres"]["healthcheck"]["test"]
    assert "healthcheck" in services()["mailpit"]


def test_every_api_has_a_health_check_on_its_port():
    for name in SERVICES:
        svc = services()[f"{name}-api"]
        test = svc["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name  # slim images have no curl
        code = test[3]
        compile(code, f"{name}-api healthcheck", "exec")
        # `crm <service> api` binds 0.0.0.0 on the service's default port (no CRM_BIND).
        assert "CRM_BIND" not in environment(svc)
        if name == "gateway":  # /ready only on its internal listener (load_settings' default)
            internal = load_settings("gateway", {}).extra["internal_bind"]
            assert f"http://{internal}/ready" in code
            assert "CRM_INTERNAL_BIND" not in environment(svc)
        else:
            assert f"http://127.0.0.1:{SERVICE_PORTS[name]}/health" in code, name


def test_the_settings_each_process_gets():
    names = set(services())
    databases = init_databases()
    for name, svc in crm_services().items():
        env = environment(svc)
        for service in SERVICES:
            settings = load_settings(service, env)
            url = make_url(settings.database_url)
            assert url.get_backend_name() == "postgresql", (name, service)
            assert url.host in names, (name, service)
            assert url.database in databases, f"{name}: no database {url.database}"
            assert url.database == service
            for other, port in SERVICE_PORTS.items():
                assert settings.service_urls[other] == f"http://{other}-api:{port}"
        own = name.rsplit("-", 1)[0]
        if name == "broker-users":  # makes every service's user, as the broker's admin
            assert set(SERVICES) == {
                key.removesuffix("_AMQP_URL").lower() for key in env if key.endswith("_AMQP_URL")
            }
            assert urlsplit(env["CRM_RABBITMQ_ADMIN_URL"]).hostname == "rabbitmq"
        elif name != "gateway-admin":
            # Its own broker user, allowed only its routing keys; no other's, not the admin.
            amqp = urlsplit(load_settings(own, env).amqp_url)
            assert (amqp.hostname, amqp.username) == ("rabbitmq", own), name
            assert [key for key in env if "AMQP" in key] == [f"{own.upper()}_AMQP_URL"], name
        smtp = urlsplit(load_settings("notifications", env).extra["smtp_url"])
        assert smtp.scheme == "smtp" and smtp.hostname == "mailpit", name
        assert env["CRM_PUBLIC_URL"] == "http://localhost:8000"


def test_the_init_script_makes_one_database_per_service():
    assert init_databases() == set(SERVICES)
    mounts = services()["postgres"]["volumes"]
    mount = next(m for m in mounts if "docker-entrypoint-initdb.d" in m)
    source = mount.split(":", 1)[0]
    assert (ROOT / source).resolve() == INIT_SQL


def test_only_the_gateway_and_the_mail_ui_are_published():
    published = {name: svc["ports"] for name, svc in services().items() if svc.get("ports")}
    assert set(published) == {"gateway-api", "mailpit"}
    assert [interpolate(p) for p in published["gateway-api"]] == ["127.0.0.1:8000:8000"]
    assert [interpolate(p) for p in published["mailpit"]] == ["127.0.0.1:8025:8025"]


def _committed_secrets(name: str, key: str, raw: str) -> list[str]:
    problems = []
    if SECRET_NAME.search(key):
        match = _VARIABLE.fullmatch(raw)
        required = match is not None and (match.group(2) or "").endswith("?")
        if not match or not required and (match.group(3) or "") not in DEV_DEFAULTS:
            problems.append(f"{name}: {key} is not a variable with a dev default")
    for url in re.findall(r"\w+://[^\s]+", raw):
        password = urlsplit(interpolate(url, {"X": "x"})).password
        raw_password = re.match(r"\w+://[^:/@]+:(.*)@", url)
        if password is None or raw_password is None:
            continue
        match = _VARIABLE.fullmatch(raw_password.group(1))
        if not match or (match.group(3) or "") not in DEV_DEFAULTS:
            problems.append(f"{name}: {key} has a password in plain text")
    return problems


def test_no_secret_is_committed_in_plain_text():
    problems = []
    for name, svc in services().items():
        for key, value in (svc.get("environment") or {}).items():
            problems += _committed_secrets(name, key, str(value))
    assert problems == []
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_secrets_are_required_with_no_default_and_every_process_runs_as_production():
    for name, svc in crm_services().items():
        raw = svc["environment"]
        assert raw["CRM_ENV"] == "production", name
        for variable in ("CRM_JWT_SECRET", "CRM_ADMIN_PASSWORD"):
            match = _VARIABLE.fullmatch(raw[variable])
            assert match and match.group(1) == variable, (name, raw[variable])
            assert match.group(2) == ":?" and match.group(3).startswith("set "), raw[variable]


def test_the_secret_check_would_catch_one():
    assert _committed_secrets("x", "CRM_JWT_SECRET", "s3cr3t")
    assert _committed_secrets("x", "CRM_JWT_SECRET", "${CRM_JWT_SECRET:-s3cr3t}")
    assert _committed_secrets("x", "URL", "postgresql://crm:hunter2@postgres/x")
    assert not _committed_secrets("x", "URL", "postgresql://crm:${PG:-crm}@postgres/x")
    assert not _committed_secrets("x", "CRM_JWT_SECRET", "${CRM_JWT_SECRET:-}")


def test_the_image_runs_crm_as_a_non_root_user():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    runtime = stages[-1]
    assert runtime["image"] == "python:3.11-slim"
    user = last(runtime, "USER")
    assert user is not None and user.split(":")[0] not in ("root", "0")
    assert json.loads(last(runtime, "ENTRYPOINT")) == ["crm"]
    command = json.loads(last(runtime, "CMD"))
    assert command == ["gateway", "api"]
    assert parser().parse_args(command).service == "gateway"
    # The runtime copies what the builder made; nothing is built or pip-installed in it.
    runs = " ".join(rest for kw, rest in runtime["instructions"] if kw == "RUN")
    assert "pip install" not in runs
    assert "[dev]" not in DOCKERFILE.read_text()


def test_the_image_gets_what_it_copies_and_no_local_state():
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must in (".venv", "var", ".git", "**/__pycache__", ".pytest_cache", ".ruff_cache"):
        assert must in ignored, must
    for stage in dockerfile_stages():
        for keyword, rest in stage["instructions"]:
            if keyword != "COPY" or rest.startswith("--from"):
                continue
            *sources, _dest = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    # deploy/gunicorn.conf.py is read by `crm <service> api`: it must reach the image.
    assert not any(fnmatch.fnmatch("deploy/gunicorn.conf.py", p) for p in ignored)
