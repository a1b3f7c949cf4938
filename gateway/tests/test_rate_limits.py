"""Rate limits per client address on the public paths and per caller on the API."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from gateway import rate_limits, worker
from gateway.app import bootstrap_admin, create_app
from gateway.models import RateLimitCounter
from gateway.tests.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    FAST_HASHER,
    bearer,
    close_app,
    gateway_config,
)
from gateway.tests.fake_services import closed_port
from gateway.tests.gunicorn_gateway import gunicorn_gateway
from shared.config import SERVICE_PORTS, load_settings

# A moment 15 s into a one-minute window.
NOW = 1_800_000_015.0
WINDOW = 60
PUBLIC_REQUESTS = {
    "auth": ("POST", "/api/v1/auth/token"),
    "forms": ("POST", "/api/v1/forms/leads"),
    "tracking": ("GET", "/t/o/some-token.gif"),
    "unsubscribe": ("GET", "/api/v1/unsubscribe/some-token"),
    "opt-in": ("GET", "/api/v1/subscriptions/confirm/some-token"),
    "csat": ("GET", "/api/v1/csat/some-token"),
}


def limits_extra(**changes: Any) -> dict[str, Any]:
    """The gateway's `extra` settings from the environment, with some changed."""
    return {**load_settings("gateway").extra, **changes}


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., Flask]]:
    """A gateway with the given limits (rate_limit_<family>=N, ...); every service down."""
    apps: list[Flask] = []
    down = f"http://127.0.0.1:{closed_port()}"

    def make(**extra: Any) -> Flask:
        config = gateway_config(
            database_url,
            extra=limits_extra(**extra),
            service_urls=dict.fromkeys(SERVICE_PORTS, down),
        )
        app = create_app(config)
        bootstrap_admin(app.extensions["crm.db"], app.extensions["crm.settings"], FAST_HASHER)
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_app(app)


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The limiter's clock, stopped at NOW; change now[0] to move it."""
    now = [NOW]
    monkeypatch.setattr(rate_limits, "clock", lambda: now[0])
    return now


def call(client: FlaskClient, method: str, path: str, address: str = "198.51.100.7", **kw: Any):
    return client.open(
        path, method=method, json={}, environ_overrides={"REMOTE_ADDR": address}, **kw
    )


def sign_in(client: FlaskClient) -> dict[str, str]:
    response = client.post(
        "/api/v1/auth/token", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200, response.get_json()
    return bearer(response.get_json()["access_token"])


@pytest.mark.parametrize("family", sorted(PUBLIC_REQUESTS))
def test_each_public_path_is_limited_per_client_address(make_app, family):
    app = make_app(rate_limit_auth=2, rate_limit_forms=2, rate_limit_links=2, rate_limit_tracking=2)
    client = app.test_client()
    method, path = PUBLIC_REQUESTS[family]

    answers = [call(client, method, path).status_code for _ in range(3)]

    assert 429 not in answers[:2]
    assert answers[2] == 429
    assert call(client, method, path, address="203.0.113.50").status_code != 429


def test_public_families_are_counted_apart(make_app):
    app = make_app(rate_limit_auth=1, rate_limit_tracking=1)
    client = app.test_client()
    call(client, "POST", "/api/v1/auth/token")
    assert call(client, "POST", "/api/v1/auth/token").status_code == 429

    assert call(client, "GET", "/t/o/some-token.gif").status_code != 429


def test_the_api_is_limited_per_user(make_app):
    app = make_app(rate_limit_api=3)
    client = app.test_client()
    admin = sign_in(client)

    answers = [client.get("/api/v1/me", headers=admin).status_code for _ in range(3)]
    refused = client.get("/api/v1/users", headers=admin)  # the budget spans every route

    assert answers == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["RateLimit-Limit"] == "3"


def test_each_user_has_a_budget_of_their_own(make_app):
    app = make_app(rate_limit_api=2)
    client = app.test_client()
    admin = sign_in(client)
    created = client.post(
        "/api/v1/users",
        headers=admin,
        json={"email": "sam@example.com", "role": "sales", "password": "password-123"},
    )
    assert created.status_code == 201
    assert client.get("/api/v1/me", headers=admin).status_code == 200
    assert client.get("/api/v1/me", headers=admin).status_code == 429

    token = client.post(
        "/api/v1/auth/token", json={"email": "sam@example.com", "password": "password-123"}
    ).get_json()["access_token"]

    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200


def test_the_api_is_limited_per_api_key(make_app):
    app = make_app(rate_limit_api=3)
    client = app.test_client()
    admin = sign_in(client)
    made = client.post("/api/v1/api-keys", headers=admin, json={"name": "shop", "role": "viewer"})
    assert made.status_code == 201, made.get_json()
    key = {"X-API-Key": made.get_json()["key"]}

    answers = [client.get("/api/v1/contacts", headers=key).status_code for _ in range(4)]

    assert 429 not in answers[:3]  # 503: the contacts service is down here
    assert answers[3] == 429
    assert client.get("/api/v1/me", headers=admin).status_code == 200


def test_limited_answers_carry_the_ratelimit_headers_and_429_a_retry_after(make_app, frozen_clock):
    app = make_app(rate_limit_auth=2)
    client = app.test_client()

    first, second, third = (call(client, "POST", "/api/v1/auth/token") for _ in range(3))

    assert first.headers["RateLimit-Limit"] == "2"
    assert first.headers["RateLimit-Remaining"] == "1"
    assert second.headers["RateLimit-Remaining"] == "0"
    assert first.headers["RateLimit-Reset"] == "45"  # the window ends 45 s after NOW
    assert "Retry-After" not in second.headers
    assert third.status_code == 429
    assert third.mimetype == "application/problem+json"
    assert third.get_json()["title"] == "Too Many Requests"
    assert third.headers["Retry-After"] == "45"
    assert third.headers["RateLimit-Remaining"] == "0"


def test_paths_outside_the_limits_carry_no_ratelimit_headers(make_app):
    client = make_app().test_client()

    response = client.get("/health")

    assert response.status_code == 200
    assert "RateLimit-Limit" not in response.headers


def test_the_limit_resets_with_the_next_window(make_app, frozen_clock):
    app = make_app(rate_limit_tracking=1)
    client = app.test_client()
    call(client, "GET", "/t/o/x.gif")
    frozen_clock[0] = NOW + 44
    blocked = call(client, "GET", "/t/o/x.gif")
    assert blocked.status_code == 429
    assert blocked.headers["Retry-After"] == "1"

    frozen_clock[0] = NOW + 45  # the next window starts

    again = call(client, "GET", "/t/o/x.gif")
    assert again.status_code != 429
    assert again.headers["RateLimit-Remaining"] == "0"
    assert again.headers["RateLimit-Reset"] == str(WINDOW)


def test_a_limit_of_zero_lifts_that_limit(make_app):
    app = make_app(rate_limit_auth=0)
    client = app.test_client()

    answers = [call(client, "POST", "/api/v1/auth/token") for _ in range(3)]

    assert all(answer.status_code == 422 for answer in answers)
    assert all("RateLimit-Limit" not in answer.headers for answer in answers)


def test_limits_can_be_turned_off(make_app):
    app = make_app(rate_limits=False, rate_limit_auth=1)
    client = app.test_client()

    answers = [call(client, "POST", "/api/v1/auth/token").status_code for _ in range(3)]

    assert answers == [422, 422, 422]


def test_the_setting_turns_limits_off_from_the_environment():
    assert load_settings("gateway", {"CRM_RATE_LIMITS": "off"}).extra["rate_limits"] is False
    assert load_settings("gateway", {}).extra["rate_limits"] is True


def test_a_database_failure_lets_requests_through(make_app, monkeypatch, caplog):
    app = make_app(rate_limit_auth=1)
    client = app.test_client()

    def broken(*_args: Any) -> int:
        raise OperationalError("UPSERT", {}, Exception("database is down"))

    monkeypatch.setattr(rate_limits, "count_hit", broken)

    answers = [call(client, "POST", "/api/v1/auth/token") for _ in range(3)]

    assert [answer.status_code for answer in answers] == [422, 422, 422]
    assert "RateLimit-Limit" not in answers[0].headers
    assert "rate limit not checked" in caplog.text


def test_a_missing_counter_table_lets_requests_through(make_app):
    app = make_app(rate_limit_auth=1)
    RateLimitCounter.__table__.drop(app.extensions["crm.db"].engine)

    answers = [call(app.test_client(), "POST", "/api/v1/auth/token") for _ in range(2)]

    assert [answer.status_code for answer in answers] == [422, 422]


def test_the_client_address_comes_from_trusted_proxies_only(make_app):
    behind_proxy = make_app(rate_limit_auth=1, trusted_proxies=1).test_client()
    exposed = make_app(rate_limit_auth=1).test_client()

    def through_proxy(client: FlaskClient, client_address: str) -> int:
        return client.post(
            "/api/v1/auth/token", json={}, headers={"X-Forwarded-For": client_address}
        ).status_code

    assert through_proxy(behind_proxy, "198.51.100.1") == 422
    assert through_proxy(behind_proxy, "198.51.100.2") == 422  # another client
    assert through_proxy(behind_proxy, "198.51.100.1") == 429
    # Without a trusted proxy the header is the client's own word: it changes nothing.
    assert through_proxy(exposed, "198.51.100.1") == 422
    assert through_proxy(exposed, "198.51.100.2") == 429


def test_past_windows_are_purged(make_app, frozen_clock):
    app = make_app(rate_limit_tracking=5)
    client = app.test_client()
    db = app.extensions["crm.db"]
    call(client, "GET", "/t/o/x.gif")
    frozen_clock[0] = NOW + WINDOW
    call(client, "GET", "/t/o/x.gif")

    purged = rate_limits.purge_expired(db, NOW + WINDOW)

    assert purged == 1
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(RateLimitCounter)) == 1


def test_the_gateway_worker_purges_on_a_timer(make_app):
    app = make_app(rate_limit_tracking=5)
    db = app.extensions["crm.db"]
    call(app.test_client(), "GET", "/t/o/x.gif")
    (purge,) = worker.timers(db)
    later = time.time() + 2 * 3600

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rate_limits, "clock", lambda: later)
        purge.action()

    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(RateLimitCounter)) == 0


def test_concurrent_requests_are_all_counted(make_app):
    app = make_app(rate_limit_tracking=1000)
    limiter = app.extensions[rate_limits.RATE_LIMITER]
    seen: list[int] = []

    def hit() -> None:
        for _ in range(10):
            usage = limiter.check("tracking", "198.51.100.9")
            seen.append(usage.hits)

    threads = [threading.Thread(target=hit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(seen) == list(range(1, 41))


def _wait_for_a_fresh_window(window_seconds: int, needed_seconds: float) -> None:
    """Sleep past the next window boundary if fewer than `needed_seconds` are left."""
    left = window_seconds - time.time() % window_seconds
    if left < needed_seconds:
        time.sleep(left + 0.5)


def test_two_gunicorn_workers_share_the_limit(tmp_path, database_url):
    limit = 20
    with gunicorn_gateway(
        tmp_path,
        database_url,
        CRM_RATE_LIMIT_TRACKING=str(limit),
        CRM_RATE_LIMIT_WINDOW_SECONDS="3600",
    ) as gateway:
        _wait_for_a_fresh_window(3600, needed_seconds=60)
        url = f"{gateway.url}/t/o/some-token.gif"
        statuses: list[int] = []
        bodies: list[str] = []

        def hit(times: int) -> None:
            for _ in range(times):  # no session: a new connection each time
                response = requests.get(url, timeout=10)
                statuses.append(response.status_code)
                bodies.append(response.text + str(response.headers))

        # The first `limit` requests from two threads at once, so both workers answer.
        threads = [threading.Thread(target=hit, args=(limit // 2,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        last = requests.get(url, timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answered = [row for row in gateway.answers() if row[2].startswith("/t/")]
            if len(answered) == limit + 1:
                break
            time.sleep(0.1)

    assert 429 not in statuses and len(statuses) == limit
    assert last.status_code == 429
    assert 0 < int(last.headers["Retry-After"]) <= 3600
    assert len({pid for pid, _status, _path in answered}) == 2, answered
    # The services are down: the answers say so without naming where they were looked for.
    for body in bodies:
        assert f"127.0.0.1:{gateway.closed_port}" not in body
        assert "Traceback" not in body
