"""Fixtures every test can use: the real broker, the real PostgreSQL, isolated per test.

Where they come from, in order: `CRM_TEST_AMQP_URL` / `CRM_TEST_POSTGRES_URL`; a
testcontainers container when a Docker engine answers; the local defaults
(RabbitMQ on 127.0.0.1:5672, PostgreSQL on 127.0.0.1:5432). Under CI (`CI` set to true,
1, yes or on) a missing broker or database fails the run, and so does every skip but those
in ALLOWED_SKIPS; elsewhere the tests needing what is missing skip.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from urllib.parse import urlsplit

import pika
import pytest
import sqlalchemy as sa

from shared.config import Settings, load_settings
from shared.testing import TEST_JWT_SECRET

LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
RUN_ID = uuid.uuid4().hex[:8]
# The code has no default secret: every app and process the tests start signs with this.
os.environ.setdefault("CRM_JWT_SECRET", TEST_JWT_SECRET)
_counter = itertools.count()

# The only skips a CI run accepts, {test id pattern (fnmatch): why}. Any other skip under
# CI fails the run: a test that cannot run there proves nothing while the run looks green.
ALLOWED_SKIPS = {
    "services/sales/tests/test_pipelines_api.py::"
    "test_concurrent_default_switches_leave_exactly_one_default[[]sqlite[]]": (
        "row locks are PostgreSQL's: SQLite runs one writer at a time"
    ),
    "services/support/tests/test_sweep.py::"
    "test_a_sweep_skips_a_ticket_another_transaction_holds[[]sqlite[]]": (
        "row locks are PostgreSQL's: SQLite runs one writer at a time"
    ),
    "services/notifications/tests/test_webhooks.py::"
    "test_a_claim_skips_a_delivery_another_transaction_holds[[]sqlite[]]": (
        "row locks are PostgreSQL's: SQLite runs one writer at a time"
    ),
    "services/notifications/tests/test_reminders.py::"
    "test_a_firing_skips_a_reminder_another_transaction_holds[[]sqlite[]]": (
        "row locks are PostgreSQL's: SQLite runs one writer at a time"
    ),
    "services/sales/tests/test_tasks_api.py::"
    "test_an_owners_overdue_list_reads_the_owner_done_due_index[[]sqlite[]]": (
        "the query plan checked is PostgreSQL's"
    ),
    "tests/test_deploy_compose.py::test_docker_compose_config_passes": (
        "Compose v2 comes only from Docker's own package repository, which CI cannot reach; "
        "test_the_compose_file_matches_the_compose_specification_schema checks the file"
    ),
}
CI_VALUES = ("true", "1", "yes", "on")
_unexpected_skips: list[tuple[str, str]] = []


def running_in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """CI is set to true, 1, yes or on, in any case."""
    return environ.get("CI", "").strip().lower() in CI_VALUES


def allowed_skip(nodeid: str) -> str | None:
    """Why this test may skip under CI, or None when it may not."""
    plain = re.sub(r"@[\w-]+$", "", nodeid)  # xdist's --dist loadgroup adds "@<group>"
    for pattern, reason in ALLOWED_SKIPS.items():
        if fnmatch.fnmatchcase(plain, pattern):
            return reason
    return None


def _note_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and allowed_skip(report.nodeid) is None:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _unexpected_skips.append((report.nodeid, reason.removeprefix("Skipped: ")))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _note_skip(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _note_skip(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI a skip not in ALLOWED_SKIPS fails the run (on xdist: in the controller)."""
    if _unexpected_skips and running_in_ci() and not hasattr(session.config, "workerinput"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unexpected_skips and running_in_ci():
        terminalreporter.section("skips CI does not allow (conftest.py ALLOWED_SKIPS)", red=True)
        for nodeid, reason in _unexpected_skips:
            terminalreporter.line(f"{nodeid}: {reason}")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def _missing(what: str, url: str) -> None:
    message = f"{what} is not reachable at {url}"
    if running_in_ci():
        pytest.fail(f"{message}; CI needs it (never skipped)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    url = os.environ.get("CRM_TEST_AMQP_URL")
    if not url and not _reachable(LOCAL_AMQP) and _docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as container:
            params = container.get_connection_params()
            yield f"amqp://guest:guest@{params.host}:{params.port}/%2F"
            return
    url = url or LOCAL_AMQP
    if not _reachable(url):
        _missing("RabbitMQ", url)
    yield url


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    url = os.environ.get("CRM_TEST_POSTGRES_URL")
    if not url and not _reachable(LOCAL_POSTGRES) and _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
            yield container.get_connection_url()
            return
    url = url or LOCAL_POSTGRES
    if not _reachable(url):
        _missing("PostgreSQL", url)
    yield url


@pytest.fixture(scope="session")
def postgres_run_url(postgres_server_url: str) -> Iterator[str]:
    """A database of this test run's own, dropped at the end."""
    server = sa.make_url(postgres_server_url).set(drivername="postgresql+psycopg")
    name = f"crm_test_{RUN_ID}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield server.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_run_url: str) -> Iterator[str]:
    """A schema of this test's own inside the run's database."""
    schema = f"t{next(_counter)}_{uuid.uuid4().hex[:6]}"
    engine = sa.create_engine(postgres_run_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(postgres_run_url).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """Each test using this runs twice: on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'service.db'}"
    return request.getfixturevalue("postgres_url")


def delete_broker_names(amqp_url: str, prefix: str) -> None:
    """Delete the queues and exchanges a test made under its prefix."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for queue in _queues_with_prefix(prefix):
            channel.queue_delete(queue)
        for exchange in (f"{prefix}crm.events", f"{prefix}crm.dlx"):
            channel.exchange_delete(exchange)
    finally:
        connection.close()


_declared: dict[str, set[str]] = {}


def remember_queue(prefix: str, queue: str) -> None:
    _declared.setdefault(prefix, set()).add(queue)


def _queues_with_prefix(prefix: str) -> set[str]:
    return _declared.pop(prefix, set())


@pytest.fixture
def amqp_prefix(amqp_url: str) -> Iterator[str]:
    """Exchange and queue names of this test's own on the shared broker."""
    prefix = f"test-{RUN_ID}-{next(_counter)}."
    yield prefix
    delete_broker_names(amqp_url, prefix)


@pytest.fixture
def make_settings(tmp_path, amqp_url: str, amqp_prefix: str) -> Callable[..., Settings]:
    """Settings for a service under test: its own broker names, a temporary data dir."""

    def factory(service: str, **overrides) -> Settings:
        environ = {"CRM_DATA_DIR": str(tmp_path), "CRM_JWT_SECRET": TEST_JWT_SECRET}
        base = load_settings(service, environ=environ)
        settings = base.with_overrides(
            amqp_url=amqp_url,
            amqp_prefix=amqp_prefix,
            retry_delays=(0.2, 0.5),
            relay_idle_seconds=0.05,
            **overrides,
        )
        for suffix in ("", ".dlq"):
            remember_queue(amqp_prefix, settings.queue + suffix)
        for delay in settings.retry_delays:
            remember_queue(amqp_prefix, f"{settings.queue}.retry.{int(delay * 1000)}ms")
        return settings

    return factory
