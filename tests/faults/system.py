"""The whole CRM as separate real processes, each in its own process group, for fault tests.

What `crm run` starts (every service's api under gunicorn and its worker, the gateway's
too, the SMTP catcher), but one process at a time instead of under honcho: a test can
SIGKILL one worker and start it again while everything else keeps running. Each process
writes to its own log file (never a pipe: a full pipe would stall it).
"""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import requests
import sqlalchemy as sa

from tests.crm_run import database_settings, eventually, free_port, free_ports, stop_groups

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10
ADMIN = {"email": "boss@example.com", "password": "correct horse"}


def read_mail(directory: Path) -> list[EmailMessage]:
    """Every message the SMTP catcher kept as an .eml file, oldest first."""
    if not directory.is_dir():
        return []
    return [
        email.message_from_bytes(path.read_bytes(), policy=policy.default)
        for path in sorted(directory.glob("*.eml"))
    ]


class System:
    """Every process of the CRM, started and stopped one by one; `stop()` ends them all."""

    def __init__(
        self,
        workdir: Path,
        amqp_url: str,
        amqp_prefix: str,
        databases: dict[str, str] | None = None,
        **env: str,
    ) -> None:
        """`databases`: {service: URL} (a PostgreSQL schema each); none: SQLite files."""
        from shared.cli import SERVICES

        self.services = SERVICES
        self.workdir, self.amqp_url, self.amqp_prefix = workdir, amqp_url, amqp_prefix
        self.data_dir = workdir / "var"
        self.ports = free_ports(SERVICES)
        self.env = {
            **os.environ,
            **{f"CRM_{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
            **{f"CRM_{name.upper()}_URL": self.url(name) for name in SERVICES},
            **{f"CRM_{name.upper()}_WORKER_METRICS_PORT": "0" for name in SERVICES},
            "CRM_DATA_DIR": str(self.data_dir),
            "CRM_AMQP_URL": amqp_url,
            "CRM_AMQP_PREFIX": amqp_prefix,
            "CRM_RELAY_IDLE_SECONDS": "0.05",
            "GUNICORN_WORKERS": "2",
            "CRM_ADMIN_EMAIL": ADMIN["email"],
            "CRM_ADMIN_PASSWORD": ADMIN["password"],
            "CRM_SMTP_CATCHER_PORT": str(free_port()),  # kept as .eml under CRM_DATA_DIR/mail
            "CRM_PUBLIC_URL": self.url("gateway"),
            # The gateway's /ready and /metrics listener (its default, port + 100, may be taken).
            "CRM_INTERNAL_BIND": f"127.0.0.1:{free_port()}",
            "CRM_NOTIFICATIONS_TICK_SECONDS": "0.2",
            **database_settings(databases or {}),
            **env,
        }
        self.engines: dict[str, sa.Engine] = {}
        self.env.pop("CRM_SMTP_URL", None)
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.processes: dict[str, subprocess.Popen] = {}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def api(self) -> str:
        return f"{self.url('gateway')}/api/v1"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    def consumers(self) -> list[str]:
        """The services whose worker consumes a queue."""
        return [name for name, spec in self.services.items() if spec.has_worker and spec.consumes]

    def queue_names(self) -> list[str]:
        """Every queue the system declares (so the test can delete them afterwards)."""
        delays = self.env.get("CRM_RETRY_DELAYS", "1,5,30,120").split(",")
        suffixes = ["", ".dlq", *(f".retry.{int(float(d) * 1000)}ms" for d in delays)]
        return [f"{self.amqp_prefix}{n}.events{s}" for n in self.consumers() for s in suffixes]

    # --- processes -------------------------------------------------------------------------

    def start(self) -> None:
        """Migrate every database and make the admin (as `crm run` does), then every process."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        script = (
            "from shared.cli import SERVICES, migrate\n"
            "from gateway.app import bootstrap_admin, create_app\n"
            "from shared.config import load_settings\n"
            "for name in SERVICES: migrate(name)\n"
            "app = create_app()\n"
            "bootstrap_admin(app.extensions['crm.db'], load_settings('gateway'))\n"
        )
        log = self.workdir / "migrate.log"
        with log.open("wb") as output:
            done = subprocess.run(
                [sys.executable, "-c", script], cwd=ROOT, env=self.env, stdout=output,
                stderr=subprocess.STDOUT, timeout=120, check=False,
            )  # fmt: skip
        assert done.returncode == 0, log.read_text(errors="replace")[-4000:]
        for name, spec in self.services.items():
            self.start_process(f"{name}-api")
            if spec.has_worker:
                self.start_process(f"{name}-worker")
        self.start_process("smtp-catcher")
        self.wait_until_ready()

    def command(self, process: str) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of one process, by name (`contacts-worker`...)."""
        env = dict(self.env)
        if process == "smtp-catcher":
            return [sys.executable, "-m", "services.notifications.smtp_catcher"], env
        service, kind = process.rsplit("-", 1)
        if kind == "api":
            env["CRM_BIND"] = f"127.0.0.1:{self.ports[service]}"
            metrics = self.workdir / f"metrics-{service}"
            metrics.mkdir(exist_ok=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        return [sys.executable, "-m", "shared.cli", service, kind], env

    def start_process(self, process: str) -> None:
        """Start one process in a new process group, appending to its own log file."""
        argv, env = self.command(process)
        with self.log(process).open("ab") as output:
            self.processes[process] = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def log(self, process: str) -> Path:
        return self.workdir / f"{process}.log"

    def kill(self, process: str) -> None:
        """SIGKILL one process's whole group, no chance to finish anything."""
        child = self.processes[process]
        assert child.poll() is None, f"{process} had already ended\n{self.tail(process)}"
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM every process group, then SIGKILL what is left after a grace period."""
        stop_groups(self.processes.values(), grace_seconds=25)
        for engine in self.engines.values():
            engine.dispose()

    def assert_running(self) -> None:
        ended = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        assert not ended, f"processes ended: {ended}\n{self.tail(*ended)}"

    def tail(self, *processes: str, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {name}\n{self.log(name).read_text(errors='replace')[-chars:]}"
            for name in processes
        )

    # --- readiness -------------------------------------------------------------------------

    def wait_until_ready(self, timeout: float = 120) -> None:
        """Every api answers /health and every consuming worker holds its queue."""
        deadline = time.monotonic() + timeout
        for name in self.services:
            self._wait(lambda name=name: self._healthy(name), deadline, f"{name} api")
        for name in self.consumers():
            self.wait_for_consumer(name, deadline)

    def wait_for_consumer(self, service: str, deadline: float) -> None:
        self._wait(lambda: self.queue_consumers(service) > 0, deadline, f"{service} worker")

    def _wait(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        while not ready():
            self.assert_running()
            assert time.monotonic() < deadline, f"{what} never became ready"
            time.sleep(0.3)

    def _healthy(self, service: str) -> bool:
        try:
            return requests.get(f"{self.url(service)}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def queue_consumers(self, service: str) -> int:
        """How many consumers a service's queue has now (0 when the broker does not answer)."""
        return self._queue_state(f"{self.amqp_prefix}{service}.events")[1]

    def dead_letters(self, service: str) -> int:
        """Messages waiting in a service's dead-letter queue."""
        return self._queue_state(f"{self.amqp_prefix}{service}.events.dlq")[0]

    def _queue_state(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of a queue; (0, 0) when the broker does not answer."""
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        except pika.exceptions.AMQPError:
            return 0, 0
        try:
            method = connection.channel().queue_declare(queue, passive=True).method
            return method.message_count, method.consumer_count
        finally:
            connection.close()

    # --- looking at the effects ------------------------------------------------------------

    def login(self) -> requests.Session:
        """A session signed in as the admin through the gateway."""
        answer = requests.post(f"{self.api}/auth/token", json=ADMIN, timeout=TIMEOUT)
        assert answer.status_code == 200, answer.text
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        return session

    def query(self, service: str, sql: str, *params: Any) -> list[tuple]:
        """Rows from a service's own database, read directly; `?` marks each parameter."""
        if service not in self.engines:
            from shared.config import load_settings

            url = load_settings(service, environ=self.env).database_url
            self.engines[service] = sa.create_engine(url, poolclass=sa.pool.NullPool)
        pieces = sql.split("?")
        marked = "".join(f"{piece}:p{i}" for i, piece in enumerate(pieces[:-1])) + pieces[-1]
        with self.engines[service].connect() as connection:
            answer = connection.execute(sa.text(marked), {f"p{i}": v for i, v in enumerate(params)})
            return [tuple(row) for row in answer]

    def unsent(self) -> dict[str, int]:
        """{service: events in its outbox not yet published}."""
        sql = "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL"
        return {name: self.query(name, sql)[0][0] for name in self.services}

    def waiting(self) -> dict[str, int]:
        """{queue: messages ready in it} for every queue but the dead-letter ones."""
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            channel = connection.channel()
            return {
                queue: channel.queue_declare(queue, passive=True).method.message_count
                for queue in self.queue_names()
                if not queue.endswith(".dlq")
            }
        finally:
            connection.close()

    def settle(self, timeout: float = 120) -> None:
        """Wait until nothing is left to do: every outbox published, every queue empty, and
        no inbox growing over a second (a batch taken but not yet acknowledged)."""

        def state() -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
            handled = "SELECT COUNT(*) FROM inbox"
            inboxes = {name: self.query(name, handled)[0][0] for name in self.consumers()}
            return self.unsent(), self.waiting(), inboxes

        def quiet(now: tuple[dict[str, int], ...]) -> bool:
            if any(now[0].values()) or any(now[1].values()):
                return False
            time.sleep(1)
            return state() == now

        eventually(state, quiet, timeout, pause=0.5, what="the system to settle")

    def undelivered(self, consumer: str, producer: str, *event_types: str) -> set[str]:
        """Ids of the events of these types `producer` recorded in its outbox (so they were
        committed, with the write they describe) that `consumer` never handled."""
        marks = ",".join("?" * len(event_types))
        sql = f"SELECT event_id FROM outbox WHERE event_type IN ({marks})"
        published = {row[0] for row in self.query(producer, sql, *event_types)}
        handled = {row[0] for row in self.query(consumer, "SELECT event_id FROM inbox")}
        return published - handled

    def mail(self) -> list[EmailMessage]:
        return read_mail(self.mail_dir)


# --- a workload whose every effect can be counted ------------------------------------------


def new_contact(number: int, domain: str) -> dict[str, Any]:
    """A contact to create: contacts publishes contact.created, marketing and notifications
    keep a replica row of it."""
    return {"first_name": f"C{number}", "last_name": "Stream", "email": f"c{number}@{domain}"}


def new_ticket(number: int, domain: str) -> dict[str, Any]:
    """A ticket from a new address: support publishes ticket.created; contacts makes the
    contact and a timeline entry, notifications emails an acknowledgement, marketing counts
    an open ticket."""
    requester = {"email": f"t{number}@{domain}", "name": f"T{number} Stream"}
    return {"subject": f"Ticket {number}", "channel": "email", "requester": requester}


EFFECTS = {  # effect -> (service, SQL giving `email, count` for every address of the domain)
    "contacts row": ("contacts", "SELECT email, COUNT(*) FROM contacts WHERE email LIKE ?"),
    "timeline entry": (
        "contacts",
        "SELECT c.email, COUNT(*) FROM interactions i JOIN contacts c ON c.id = i.contact_id "
        "WHERE i.event_type = 'ticket.created' AND c.email LIKE ?",
    ),
    "marketing replica": ("marketing", "SELECT email, COUNT(*) FROM contacts WHERE email LIKE ?"),
    "notifications replica": (
        "notifications",
        "SELECT email, COUNT(*) FROM contact_addresses WHERE email LIKE ?",
    ),
    "acknowledgement sent": (
        "notifications",
        "SELECT to_key, COUNT(*) FROM messages WHERE status = 'sent' "
        "AND cause_event_type = 'ticket.created' AND to_key LIKE ?",
    ),
}


def count_effects(system: System, domain: str) -> dict[str, dict[str, int]]:
    """{effect: {email: how many times it is there}} for every address at `domain`."""
    found = {
        effect: dict(system.query(service, f"{sql} GROUP BY 1", f"%@{domain}"))
        for effect, (service, sql) in EFFECTS.items()
    }
    mailed: dict[str, int] = {}
    for message in system.mail():
        for address in message["To"].addresses if message["To"] else ():
            to = address.addr_spec.lower()
            if to.endswith(f"@{domain}"):
                mailed[to] = mailed.get(to, 0) + 1
    found["email at the SMTP server"] = mailed
    return found


def expected_effects(contacts: list[str], tickets: list[str]) -> dict[str, set[str]]:
    """The addresses each effect must be there for, exactly once."""
    everyone = set(contacts) | set(tickets)
    return {
        "contacts row": everyone,
        "timeline entry": set(tickets),
        "marketing replica": everyone,
        "notifications replica": everyone,
        "acknowledgement sent": set(tickets),
        "email at the SMTP server": set(tickets),
    }


def compare_effects(
    found: dict[str, dict[str, int]], expected: dict[str, set[str]]
) -> tuple[dict[str, int], dict[str, int]]:
    """({effect: addresses missing}, {effect: addresses with it more than once})."""
    missing = {effect: len(wanted - set(found[effect])) for effect, wanted in expected.items()}
    twice = {
        effect: sum(1 for address in wanted if found[effect].get(address, 0) > 1)
        for effect, wanted in expected.items()
    }
    return missing, twice


def settled_effects(
    system: System, domain: str, expected: dict[str, set[str]], timeout: float
) -> tuple[dict[str, int], dict[str, int]]:
    """compare_effects once every effect is there (or `timeout` ran out) AND the system has
    settled: a duplicate still in flight when the last missing effect lands is counted too."""

    def missing() -> dict[str, int]:
        return compare_effects(count_effects(system, domain), expected)[0]

    eventually(missing, lambda found: not any(found.values()), timeout, pause=0.5, what="effects")
    system.settle()
    return compare_effects(count_effects(system, domain), expected)
