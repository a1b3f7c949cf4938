"""Fault tests: the system as real processes, broken on purpose (`-m faults` selects them)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crm_run import service_schemas
from tests.faults.system import System

HERE = Path(__file__).parent
# Settings every fault test's system runs with: retries quick enough to wait for, and no
# rate limits (a stream of a thousand writes in a minute is the point, not an abuse).
FAULT_ENV = {"CRM_RETRY_DELAYS": "0.5,2,5", "CRM_RATE_LIMITS": "off"}
# Seconds a fault test may run (pyproject's limit is for ordinary tests): a 30 s broker
# outage amid 1,000 writes and the wait for every effect take minutes on two cores.
FAULT_TEST_TIMEOUT = 900


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: breaks the running system on purpose (broker, workers, network)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/faults is a fault test, whoever wrote it, with a longer limit."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.timeout(FAULT_TEST_TIMEOUT))


@pytest.fixture
def service_databases(postgres_run_url: str) -> Iterator[dict[str, str]]:
    """A PostgreSQL schema per service, as production runs (a database per service)."""
    with service_schemas(postgres_run_url, f"faults_{uuid.uuid4().hex[:8]}") as urls:
        yield urls


@pytest.fixture
def system(
    tmp_path: Path, amqp_url: str, amqp_prefix: str, service_databases: dict[str, str]
) -> Iterator[System]:
    """Every process of the CRM running, on this test's own queues, data directory and
    PostgreSQL schemas."""
    from conftest import remember_queue

    started = System(tmp_path, amqp_url, amqp_prefix, service_databases, **FAULT_ENV)
    for queue in started.queue_names():  # deleted at the end by the amqp_prefix fixture
        remember_queue(amqp_prefix, queue)
    try:
        started.start()
        yield started
    finally:
        started.stop()
