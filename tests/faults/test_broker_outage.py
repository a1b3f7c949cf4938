"""RabbitMQ stopped for a while in the middle of a stream of writes through the gateway.

The apis write their outbox, never the broker, so every write is answered 2xx while it is
down; the workers reconnect once it is back, the relays publish what piled up, and each
consumer applies every event once. `rabbitmqctl stop_app` stops the machine's one broker:
every other test running meanwhile loses it too (the Makefile runs tests/faults alone).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import pika
import pytest
import requests

from tests.crm_run import eventually
from tests.faults.system import (
    System,
    expected_effects,
    new_contact,
    new_ticket,
    settled_effects,
)

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("crm-faults")]
log = logging.getLogger(__name__)

OUTAGE_SECONDS = float(os.environ.get("CRM_TEST_BROKER_OUTAGE_SECONDS", "30"))
WRITES, BEFORE, DURING = 1000, 300, 400  # the rest come after the outage
CLIENTS = 4
DOMAIN = "outage.example"
# (consumer, producer, event types): every such event the producer committed must be handled.
FLOWS = [
    ("contacts", "support", "ticket.created"),
    ("contacts", "notifications", "email.sent"),
    ("marketing", "contacts", "contact.created"),
    ("marketing", "support", "ticket.created"),
    ("notifications", "contacts", "contact.created"),
    ("notifications", "support", "ticket.created"),
]


@dataclass(frozen=True)
class Answer:
    number: int
    status: int | str  # the HTTP status, or the error when there was no answer
    seconds: float


class Stream:
    """Writes through the gateway from a few client threads, each with its own session."""

    def __init__(self, system: System) -> None:
        self.api, self.headers = system.api, dict(system.login().headers)
        self.local = threading.local()

    def run(self, numbers: list[int], spread: float = 0.0) -> list[Answer]:
        """Write each number (evens: contacts, odds: tickets), spread over `spread` seconds."""
        start = time.monotonic()
        slot = spread / max(len(numbers), 1)
        with ThreadPoolExecutor(CLIENTS) as pool:
            waits = [start + index * slot for index in range(len(numbers))]
            return list(pool.map(self.write, numbers, waits))

    def write(self, number: int, not_before: float) -> Answer:
        time.sleep(max(0.0, not_before - time.monotonic()))
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers.update(self.headers)
        path, body = (
            ("contacts", new_contact(number, DOMAIN))
            if number % 2 == 0
            else ("tickets", new_ticket(number, DOMAIN))
        )
        started = time.monotonic()
        try:
            answer = self.local.session.post(f"{self.api}/{path}", json=body, timeout=30)
            status: int | str = answer.status_code
        except requests.RequestException as error:
            status = repr(error)
        return Answer(number, status, time.monotonic() - started)


def rabbitmqctl(*args: str) -> None:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}"


def broker_answers(amqp_url: str) -> bool:
    try:
        pika.BlockingConnection(pika.URLParameters(amqp_url)).close()
        return True
    except pika.exceptions.AMQPError:
        return False


@contextlib.contextmanager
def broker_stopped(amqp_url: str) -> Iterator[None]:
    """The broker's application stopped; started again (and answering) whatever happens."""
    try:
        rabbitmqctl("stop_app")
        assert not broker_answers(amqp_url), "the broker still answers after stop_app"
        yield
    finally:
        for attempt in range(3):  # the whole machine's tests need it back
            try:
                rabbitmqctl("start_app")
                rabbitmqctl("await_startup")
                break
            except (AssertionError, subprocess.TimeoutExpired):
                log.exception("rabbitmqctl start_app failed (attempt %d)", attempt + 1)
        assert eventually(lambda: broker_answers(amqp_url), bool, timeout=120)


@pytest.fixture
def local_broker(amqp_url: str) -> str:
    """The broker must be this machine's, for rabbitmqctl to stop and start it."""
    if shutil.which("rabbitmqctl") is None or urlsplit(amqp_url).hostname not in (
        "127.0.0.1",
        "localhost",
    ):
        pytest.skip("needs a RabbitMQ on this machine that rabbitmqctl controls")
    return amqp_url


def test_a_broker_outage_mid_stream_loses_no_write_and_applies_every_event_once(
    system: System, local_broker: str
) -> None:
    stream = Stream(system)
    numbers = list(range(WRITES))
    answers = stream.run(numbers[:BEFORE])
    with broker_stopped(local_broker):
        down = time.monotonic()
        during = stream.run(numbers[BEFORE : BEFORE + DURING], spread=OUTAGE_SECONDS * 0.8)
        time.sleep(max(0.0, down + OUTAGE_SECONDS - time.monotonic()))
    back = time.monotonic()
    answers += during + stream.run(numbers[BEFORE + DURING :])

    refused = [answer for answer in answers if not str(answer.status).startswith("2")]
    accepted_during = sum(1 for answer in during if str(answer.status).startswith("2"))
    contacts = [new_contact(n, DOMAIN)["email"] for n in numbers if n % 2 == 0]
    tickets = [new_ticket(n, DOMAIN)["requester"]["email"] for n in numbers if n % 2 == 1]
    expected = expected_effects(contacts, tickets)

    missing, twice = settled_effects(system, DOMAIN, expected, 180)
    recovered_after = time.monotonic() - back
    undelivered = {flow: len(system.undelivered(*flow)) for flow in FLOWS}
    figures = (
        f"broker down {OUTAGE_SECONDS:.0f}s: writes accepted "
        f"{len(answers) - len(refused)}/{len(answers)}, during the outage "
        f"{accepted_during}/{len(during)}; events lost {sum(undelivered.values())}; "
        f"effects missing {sum(missing.values())}, duplicated {sum(twice.values())}; "
        f"all effects present {recovered_after:.1f}s after the broker came back"
    )
    slowest = max(answer.seconds for answer in answers)
    print(f"{figures}; slowest write {slowest:.2f}s")
    assert not refused, f"{figures}\nrefused: {refused[:10]}"
    assert not any(undelivered.values()), f"{figures}\nundelivered: {undelivered}"
    assert not any(missing.values()), f"{figures}\nmissing: {missing}"
    assert not any(twice.values()), f"{figures}\nduplicated: {twice}"
    dead = {name: system.dead_letters(name) for name in system.consumers()}
    assert not any(dead.values()), f"good events dead-lettered: {dead}"
    system.assert_running()
