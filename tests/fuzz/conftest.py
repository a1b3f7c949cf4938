"""The whole system (`crm run`) as real processes on PostgreSQL, once per fuzz module.

Rate limits are off (CRM_RATE_LIMITS=off, and the sales form limit lifted) so that a
429 never hides how a route answers bad input; gateway/tests/test_rate_limits.py keeps
proving the limits themselves.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
import requests

from tests.crm_run import free_ports, internal_url, running_crm, service_schemas
from tests.fuzz.database_state import DatabaseState
from tests.fuzz.system import TIMEOUT, System, sign_in, system_environment

_runs = itertools.count()
HERE = Path(__file__).parent
# Seconds a fuzz test may run (pyproject's limit is for ordinary tests): thousands of
# requests through the whole system on two shared cores.
FUZZ_TEST_TIMEOUT = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.timeout(FUZZ_TEST_TIMEOUT))


@pytest.fixture(scope="package")
def service_databases(postgres_run_url: str) -> Iterator[dict[str, str]]:
    """A PostgreSQL schema per service in the run's database, dropped afterwards."""
    with service_schemas(postgres_run_url, f"fuzz{next(_runs)}_{uuid.uuid4().hex[:6]}") as urls:
        yield urls


@pytest.fixture(scope="package")
def database_state(service_databases: dict[str, str]) -> Iterator[DatabaseState]:
    """Row counts of every service's tables, for proving a refused request changed nothing."""
    state = DatabaseState(service_databases)
    yield state
    state.dispose()


@pytest.fixture(scope="package")
def broker_prefix(amqp_url: str) -> Iterator[str]:
    """Exchange and queue names of this module's own on the shared broker."""
    from conftest import RUN_ID, delete_broker_names, remember_queue
    from shared.cli import SERVICES

    prefix = f"test-{RUN_ID}-fuzz{next(_runs)}."
    for name in (name for name, spec in SERVICES.items() if spec.has_worker):
        for suffix in ("", ".dlq", ".retry.200ms", ".retry.500ms"):
            remember_queue(prefix, f"{prefix}{name}.events{suffix}")
    yield prefix
    deadline = time.monotonic() + 60
    while True:  # a fault test elsewhere may have the broker stopped for a while
        try:
            delete_broker_names(amqp_url, prefix)
            return
        except pika.exceptions.AMQPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


@pytest.fixture(scope="package")
def system(
    tmp_path_factory, amqp_url: str, broker_prefix: str, service_databases: dict[str, str]
) -> Iterator[System]:
    """Every service as real processes, and the admin signed in."""
    from shared.cli import SERVICES

    ports = free_ports(SERVICES)
    tmp = tmp_path_factory.mktemp("fuzz-system")
    env = system_environment(tmp / "var", ports, service_databases, (amqp_url, broker_prefix))
    with running_crm(env, ports, tmp / "crm-run.log", ready_path="/ready", seconds=180):
        yield sign_in(f"http://127.0.0.1:{ports['gateway']}", internal_url(tmp / "var"))


@pytest.fixture(scope="package")
def openapi_document(system: System) -> dict:
    """The gateway's merged public document, with every service present."""
    answer = requests.get(f"{system.api}/openapi.json", timeout=TIMEOUT)
    assert answer.status_code == 200
    document = answer.json()
    assert document.get("x-unavailable") == [], document.get("x-unavailable")
    return document
