"""A service's database unavailable for a while, under a consumer receiving good events.

The contacts worker reaches its PostgreSQL database (a schema of the test's own) only
through a TCP proxy, which the test drops for longer than every retry delay together.
The consumer waits for its database and tries again: no good message is dead-lettered,
and once the database is back every event's effect is there exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.crm_run import eventually
from tests.faults.single_worker import (
    ServiceProcesses,
    queue_depth,
    service_processes,
)
from tests.faults.tcp_proxy import TcpProxy
from tests.faults.test_network_fault import LeadConversions

pytestmark = pytest.mark.faults

RETRY_DELAYS = "0.2,0.5"  # the whole retry budget of a failing message: 0.7 s
OUTAGE_SECONDS = 5  # far longer than that budget
APPLY_SECONDS = 90


@pytest.fixture
def database_proxy(postgres_url: str) -> Iterator[TcpProxy]:
    server = sa.make_url(postgres_url)
    with TcpProxy(server.host or "127.0.0.1", server.port or 5432) as proxy:
        yield proxy


@pytest.fixture
def contacts(
    tmp_path: Path, amqp_url: str, amqp_prefix: str, postgres_url: str
) -> Iterator[ServiceProcesses]:
    with service_processes(
        "contacts",
        tmp_path / "var",
        amqp_url,
        amqp_prefix,
        database_url=postgres_url,  # migrations run straight against it
        CRM_RETRY_DELAYS=RETRY_DELAYS,
    ) as service:
        yield service


def test_consumer_waits_out_a_database_outage_without_dead_lettering_good_events(
    database_proxy: TcpProxy, contacts: ServiceProcesses, postgres_url: str
) -> None:
    via_proxy = sa.make_url(postgres_url).set(host="127.0.0.1", port=database_proxy.port)
    contacts.start_worker(database_url=via_proxy.render_as_string(hide_password=False))
    # The test reads PostgreSQL straight, not through the proxy: it sees through the outage.
    conversions = LeadConversions(contacts.settings(), contacts.database())
    try:
        conversions.publish(10)
        eventually(lambda: conversions.applied() == 10, timeout=APPLY_SECONDS, what="events before")

        database_proxy.drop()
        conversions.publish(10)
        time.sleep(OUTAGE_SECONDS)
        assert conversions.applied() == 10
        database_proxy.restore()
        conversions.publish(10)
        eventually(lambda: conversions.applied() == 30, timeout=APPLY_SECONDS, what="events after")

        settings = conversions.settings
        assert queue_depth(settings, settings.dead_letter_queue) == 0
        assert "dead-lettered" not in contacts.log_text()
        assert "database unreachable" in contacts.log_text()  # it noticed, waited, retried
        conversions.assert_each_applied_once()
    finally:
        conversions.db.dispose()
