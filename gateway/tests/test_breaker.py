"""The circuit breakers: alone with a fake clock, and in the proxy's forwarding."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from gateway.app import create_app
from gateway.breaker import BREAKERS, CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen
from gateway.tests.conftest import close_app, gateway_config
from gateway.tests.fake_services import FakeService, ServiceUrls, token_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("support", failures=3, open_seconds=30, clock=clock)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.guard()
        breaker.record_failure()


def test_the_breaker_opens_after_n_failures_in_a_row(breaker):
    fail(breaker, 2)
    assert breaker.state == CLOSED

    fail(breaker, 1)

    assert breaker.state == OPEN


def test_a_success_starts_the_count_again(breaker):
    fail(breaker, 2)
    breaker.record_status(404)  # an answer, even a 4xx, means the service is up
    fail(breaker, 2)

    assert breaker.state == CLOSED
    breaker.record_status(502)
    assert breaker.state == OPEN


def test_an_open_breaker_fails_fast_with_the_time_left(breaker, clock):
    fail(breaker, 3)
    clock.now += 10.2

    with pytest.raises(CircuitOpen) as refused:
        breaker.guard()

    assert refused.value.status == 503
    assert refused.value.headers == {"Retry-After": "20"}
    assert refused.value.detail == "The support service is unavailable"


def test_after_the_open_period_one_trial_goes_and_its_success_closes(breaker, clock):
    fail(breaker, 3)
    clock.now += 30

    breaker.guard()  # the trial
    assert breaker.state == HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.guard()  # everyone else waits for it
    breaker.record_success()

    assert breaker.state == CLOSED
    breaker.guard()


def test_a_failed_trial_opens_the_breaker_for_another_period(breaker, clock):
    fail(breaker, 3)
    clock.now += 30
    breaker.guard()

    breaker.record_failure()

    assert breaker.state == OPEN
    clock.now += 29
    with pytest.raises(CircuitOpen):
        breaker.guard()
    clock.now += 1
    breaker.guard()
    assert breaker.state == HALF_OPEN


def test_a_trial_that_never_reports_is_given_up_after_a_period(breaker, clock):
    fail(breaker, 3)
    clock.now += 30
    breaker.guard()  # its thread dies without a word

    clock.now += 30

    breaker.guard()  # a new trial
    breaker.record_success()
    assert breaker.state == CLOSED


def test_failures_of_calls_made_before_it_opened_do_not_extend_the_period(breaker, clock):
    fail(breaker, 3)
    clock.now += 29
    breaker.record_failure()  # a slow call that started while it was closed
    clock.now += 1

    breaker.guard()
    assert breaker.state == HALF_OPEN


def test_threads_sharing_a_breaker_let_exactly_one_trial_through(breaker, clock):
    fail(breaker, 3)
    clock.now += 30
    start = threading.Barrier(16)
    passed: list[int] = []

    def caller(number: int) -> None:
        start.wait()
        try:
            breaker.guard()
            passed.append(number)
        except CircuitOpen:
            pass

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(passed) == 1


def test_concurrent_failures_are_all_counted(clock):
    breaker = CircuitBreaker("sales", failures=400, open_seconds=30, clock=clock)

    def fail_100() -> None:
        for _ in range(100):
            breaker.record_failure()

    threads = [threading.Thread(target=fail_100) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert breaker.state == OPEN


# --- in the proxy ---------------------------------------------------------------------------


@pytest.fixture
def services(fakes: dict[str, FakeService]) -> dict[str, FakeService]:
    return fakes


def make_gateway(tmp_path, services: dict[str, FakeService], **overrides: Any) -> Flask:
    config = gateway_config(
        f"sqlite:///{tmp_path / 'gateway.db'}",
        service_urls=ServiceUrls(services),
        breaker_failures=3,
        breaker_open_seconds=0.6,
        http_timeout_seconds=0.3,
        **overrides,
    )
    return create_app(config)


@pytest.fixture
def gateway(tmp_path, services: dict[str, FakeService]) -> Iterator[Flask]:
    app = make_gateway(tmp_path, services)
    yield app
    close_app(app)


def get_tickets(app: Flask) -> Any:
    return app.test_client().get("/api/v1/tickets", headers=token_for(app, "support"))


def test_the_proxy_opens_the_circuit_after_n_5xx_and_then_answers_503_at_once(gateway, services):
    support = services["support"]
    support.answers["/api/v1/tickets"] = (500, {"title": "Internal Server Error"})
    for _ in range(3):
        assert get_tickets(gateway).status_code == 500  # the service's own answer
    assert len(support.calls) == 3

    response = get_tickets(gateway)

    assert len(support.calls) == 3  # not asked
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"] == "The support service is unavailable"
    assert response.headers["Retry-After"] == "1"
    # Other services are not affected.
    assert gateway.extensions[BREAKERS]["sales"].state == CLOSED


def test_after_the_open_period_one_good_call_closes_the_circuit(gateway, services):
    support = services["support"]
    support.stopped = True
    for _ in range(3):
        assert get_tickets(gateway).status_code == 503
    assert gateway.extensions[BREAKERS]["support"].state == OPEN

    support.stopped = False
    support.answers["/api/v1/tickets"] = (200, {"items": [], "next_cursor": None})
    assert get_tickets(gateway).status_code == 503  # still open: not asked
    assert support.calls == []
    time.sleep(0.7)

    assert get_tickets(gateway).status_code == 200  # the trial
    assert gateway.extensions[BREAKERS]["support"].state == CLOSED
    assert get_tickets(gateway).status_code == 200
    assert len(support.calls) == 2


def test_a_refused_connection_is_503_problem_naming_the_service(gateway, services):
    services["sales"].stopped = True

    response = gateway.test_client().get("/api/v1/deals", headers=token_for(gateway, "sales"))

    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"] == "The sales service is unavailable"
    assert "127.0.0.1" not in response.get_data(as_text=True)


def test_a_timeout_is_504_problem_naming_the_service_and_counts_as_a_failure(gateway, services):
    services["marketing"].delay = 1.0
    services["marketing"].answers["/api/v1/campaigns"] = (200, {"items": []})

    response = gateway.test_client().get("/api/v1/campaigns", headers=token_for(gateway))

    assert response.status_code == 504
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"] == "The marketing service did not answer in time"
    assert gateway.extensions[BREAKERS]["marketing"].consecutive_failures == 1
