"""The `crm` command: run the whole system, or one service's api, worker or migrations."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import SERVICE_PORTS, Settings, load_settings, startup_problem
from shared.local_secrets import provide_local_secrets

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ServiceSpec:
    """Where a service's parts live, named by import path so nothing loads until needed."""

    package: str
    has_worker: bool = True
    # False for a worker that only relays its outbox: no queue, so no dead letters either.
    consumes: bool = True

    @property
    def app(self) -> str:
        return f"{self.package}.app:create_app()"

    @property
    def migrations(self) -> Path:
        return ROOT / self.package.replace(".", "/") / "migrations"


SERVICES = {
    "gateway": ServiceSpec("gateway", consumes=False),
    "contacts": ServiceSpec("services.contacts"),
    "sales": ServiceSpec("services.sales"),
    "support": ServiceSpec("services.support"),
    "notifications": ServiceSpec("services.notifications"),
    "marketing": ServiceSpec("services.marketing"),
}


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def refuse_unsafe_start(settings: Settings, *, makes_admin: bool = False) -> None:
    """Exit (status 2) with one line on stderr when the settings may not run here."""
    problem = startup_problem(settings, makes_admin=makes_admin)
    if problem is not None:
        sys.stderr.write(f"error: {problem}\n")
        sys.stderr.flush()
        raise SystemExit(2)


def settings_to_start(
    service: str, *, makes_admin: bool = False
) -> tuple[Settings, dict[str, Path]]:
    """A process's settings, with the kept local secrets on one machine (development), or
    exit when they may not run; also which secrets came from files under CRM_DATA_DIR."""
    settings = load_settings(service)
    kept: dict[str, Path] = {}
    if settings.is_development:  # production never gets a generated secret
        kept = provide_local_secrets(settings.data_dir, os.environ)
        settings = load_settings(service)
    refuse_unsafe_start(settings, makes_admin=makes_admin)
    return settings, kept


def check_broker(amqp_url: str) -> bool:
    """Can we open an AMQP connection? (One try, a few seconds at most.)"""
    import pika

    params = pika.URLParameters(amqp_url)
    params.connection_attempts = 1
    params.socket_timeout = 3
    params.blocked_connection_timeout = 3
    try:
        pika.BlockingConnection(params).close()
        return True
    except Exception:
        return False


def migrate(name: str) -> None:
    """Bring a service's database to its newest migration and declare its queues."""
    from shared.bus import prepare_queues
    from shared.migrations import upgrade

    settings = load_settings(name)
    spec = SERVICES[name]
    importlib.import_module(f"{spec.package}.models")
    upgrade(spec.migrations, settings.database_url)
    if spec.has_worker:
        handlers = importlib.import_module(f"{spec.package}.handlers").handlers()
        if handlers:  # a service that consumes nothing has no queue to declare
            prepare_queues(settings, handlers)


def service_port(name: str) -> int:
    """A service's port on this machine: `CRM_<NAME>_PORT`, else its default."""
    return int(os.environ.get(f"CRM_{name.upper()}_PORT", SERVICE_PORTS[name]))


def internal_bind(name: str) -> list[str]:
    """The gateway's second `--bind`: its internal listener, for /ready and /metrics."""
    if name != "gateway":
        return []
    return ["--bind", load_settings("gateway").extra["internal_bind"]]


def procfile() -> str:
    """One line per process `crm run` starts."""
    python = sys.executable
    gunicorn = [python, "-m", "gunicorn", "-c", str(ROOT / "deploy/gunicorn.conf.py")]
    lines = []
    for name, spec in SERVICES.items():
        bind = ["--bind", f"127.0.0.1:{service_port(name)}", *internal_bind(name)]
        command = [*gunicorn, *bind, f"'{spec.app}'"]
        lines.append(f"{name}: {' '.join(command)}")
        if spec.has_worker:
            lines.append(f"{name}-worker: {python} -m {spec.package}.worker")
    if not os.environ.get("CRM_SMTP_URL"):  # mail goes to the local catcher, kept as .eml files
        lines.append(f"smtp-catcher: {python} -m services.notifications.smtp_catcher")
    return "\n".join(lines) + "\n"


def run_all(_args: argparse.Namespace) -> int:
    """Check the broker, migrate, make the admin, then run every process in the foreground."""
    for name in SERVICES:  # the gateway finds each service on the port it runs on here
        os.environ.setdefault(f"CRM_{name.upper()}_URL", f"http://127.0.0.1:{service_port(name)}")
    # Every process honcho starts inherits the secrets through this environment.
    settings, kept = settings_to_start("gateway", makes_admin=True)
    if not check_broker(settings.amqp_url):
        host = settings.amqp_url.rsplit("@", 1)[-1]
        _say(
            f"error: RabbitMQ is not reachable at {host}; start one with "
            "`rabbitmq-server -detached` (or `docker run -d -p 5672:5672 rabbitmq:3`), "
            "or point CRM_AMQP_URL at one."
        )
        return 1
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for name in SERVICES:
        migrate(name)
    from gateway.app import bootstrap_admin, create_app

    app = create_app()
    bootstrap_admin(app.extensions["crm.db"], settings)
    port = service_port("gateway")
    path = settings.data_dir / "Procfile"
    path.write_text(procfile())
    _say(f"CRM gateway: http://127.0.0.1:{port}/api/v1  (data in {settings.data_dir})")
    if "CRM_ADMIN_PASSWORD" in kept:
        where = f"its password is in {kept['CRM_ADMIN_PASSWORD']} (or set CRM_ADMIN_PASSWORD)"
    else:
        where = "its password is CRM_ADMIN_PASSWORD's"
    _say(f"Admin login: {settings.admin_email}; {where}")
    if not os.environ.get("CRM_SMTP_URL"):
        _say(f"Outgoing mail: kept as .eml files in {settings.data_dir / 'mail'}")
    honcho = shutil.which("honcho", path=str(Path(sys.executable).parent)) or "honcho"
    os.execvp(honcho, [honcho, "-f", str(path), "-d", str(ROOT), "start"])
    return 0  # not reached


def run_service(args: argparse.Namespace) -> int:
    spec = SERVICES[args.service]
    if args.action == "import":
        from shared.cli_tools import import_contacts

        return import_contacts(args)
    settings_to_start(args.service)  # api, worker and migrate: never on unsafe settings
    if args.action == "migrate":
        migrate(args.service)
        queues = ", queues declared" if spec.has_worker and spec.consumes else ""
        _say(f"{args.service}: database at the newest migration{queues}")
        return 0
    if args.action == "worker":
        if not spec.has_worker:
            _say(f"error: {args.service} has no worker")
            return 2
        importlib.import_module(f"{spec.package}.worker").main()
        return 0
    port = SERVICE_PORTS[args.service]
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy/gunicorn.conf.py")]
    bind = os.environ.get("CRM_BIND", f"0.0.0.0:{port}")
    os.execv(sys.executable, [*gunicorn, "--bind", bind, *internal_bind(args.service), spec.app])
    return 0  # not reached


def dead_letters(args: argparse.Namespace) -> int:
    from shared import deadletters

    settings = load_settings(args.service)
    if args.action == "list":
        for letter in deadletters.list_dead_letters(settings, limit=args.limit):
            line = {"reason": letter.reason, "error": letter.error, "attempt": letter.attempt}
            line["body"] = letter.body.decode("utf-8", "replace")[:2000]
            _say(json.dumps(line))
        return 0
    count = deadletters.replay_dead_letters(settings, limit=args.limit)
    _say(f"{args.service}: {count} dead letters replayed")
    return 0


def service_apps() -> dict[str, Any]:
    """Each service's (not the gateway's) app factory, `create_app`, by name."""
    return {
        name: importlib.import_module(f"{spec.package}.app").create_app
        for name, spec in SERVICES.items()
        if name != "gateway"
    }


def openapi(args: argparse.Namespace) -> int:
    """Write the gateway's merged OpenAPI document, built in this process (no server)."""
    # Building the apps needs a signing secret; nothing is signed here, so a throwaway one
    # (this process only) serves when none is set.
    os.environ.setdefault("CRM_JWT_SECRET", secrets.token_urlsafe(32))
    from gateway.openapi_offline import offline_document

    text = json.dumps(offline_document(service_apps()), indent=2, sort_keys=True) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="crm", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run every service (what `make run` does)").set_defaults(
        func=run_all
    )
    from shared import cli_tools

    for name in SERVICES:
        sub = commands.add_parser(name, help=f"the {name} service")
        tools = ["import"] if name == "contacts" else []  # `crm contacts import FILE`
        sub.add_argument("action", choices=["api", "worker", "migrate", *tools])
        sub.set_defaults(func=run_service, service=name)
        if tools:
            cli_tools.add_contacts_import(sub)
    dlq = commands.add_parser("dlq", help="list or replay a service's dead letters")
    dlq.add_argument("action", choices=["list", "replay"])
    consumers = [n for n, s in SERVICES.items() if s.has_worker and s.consumes]
    dlq.add_argument("service", choices=consumers)
    dlq.add_argument("--limit", type=int, default=100)
    dlq.set_defaults(func=dead_letters)
    spec = commands.add_parser("openapi", help="write the public API's OpenAPI document")
    spec.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout")
    spec.set_defaults(func=openapi)
    cli_tools.add_commands(commands)  # users create, outbox status, seed --demo
    return root


def main(argv: list[str] | None = None) -> Any:
    args = parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
