"""`/ready` and `/metrics` are not on the gateway's public port, under gunicorn as run.

Readiness makes the gateway open connections to its database and broker, and the metrics
tell the request mix, error rates and backlogs: both answer only on the internal listener
(CRM_INTERNAL_BIND), whatever the caller sends. `/health` stays public and trivial.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests

from tests.security.conftest import TIMEOUT, System, assert_problem

pytestmark = pytest.mark.xdist_group("crm-run")

PATHS = ("/ready", "/metrics", "/ready/", "/metrics/", "/metrics?name[]=crm_http")


def _spoofs(system: System) -> list[dict[str, str]]:
    internal = urlsplit(system.internal).netloc
    return [
        {},
        {"Host": internal},
        {"X-Forwarded-Host": internal, "X-Forwarded-Port": internal.rsplit(":", 1)[1]},
        {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"},
    ]


@pytest.mark.parametrize("path", PATHS)
def test_ready_and_metrics_are_404_on_the_public_port(system: System, users, path):
    for headers in _spoofs(system):
        for caller in (requests, users["admin"].session):
            answer = caller.get(f"{system.base}{path}", headers=headers, timeout=TIMEOUT)

            assert_problem(answer, 404)
            assert "crm_" not in answer.text and "checks" not in answer.json()


def test_ready_and_metrics_answer_on_the_internal_listener(system: System):
    ready = requests.get(f"{system.internal}/ready", timeout=TIMEOUT)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"broker": "ok", "database": "ok"}}

    metrics = requests.get(f"{system.internal}/metrics", timeout=TIMEOUT)
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert 'crm_outbox_backlog{service="gateway"}' in metrics.text


def test_health_stays_public_and_tells_nothing_more(system: System):
    answer = requests.get(f"{system.base}/health", timeout=TIMEOUT)

    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "service": "gateway"}
