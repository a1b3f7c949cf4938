"""Paths with dot segments, empty segments or double encoding, sent as an attacker sends them.

`requests` (urllib3) collapses `..` before sending, so these go out through http.client,
byte for byte, to the gateway that `crm run` starts under gunicorn. Each would otherwise
reach a route of a service that the gateway never checked (its token, account, role and
rate limit): the gateway answers 400 before any routing, and nothing changes upstream.
"""

from __future__ import annotations

import http.client
import json
import uuid
from typing import Any

import pytest

from tests.security.conftest import Caller, System

pytestmark = pytest.mark.xdist_group("crm-run")

WEBHOOK_VIA_TRACKING = [
    "/t/%2e%2e/api/v1/webhooks",
    "/t/%2E%2E/api/v1/webhooks",
    "/t/..%2fapi/v1/webhooks",
    "/t/%2e%2e%2fapi/v1/webhooks",
    "/t/x/%2e%2e/%2e%2e/api/v1/webhooks",
    "/t/../api/v1/webhooks",
    "/t/.%2e/api/v1/webhooks",
    "/t/%5c..%5capi/v1/webhooks",
    "/t/..\\api/v1/webhooks",
    "/t/%252e%252e/api/v1/webhooks",
    "/t/%252e%252e%252fapi/v1/webhooks",
]
OTHER_DETOURS = [
    ("POST", "/api/v1/forms/leads/%2e%2e/%2e%2e/deals"),
    ("GET", "/api/v1/csat/%2e%2e/tickets"),
    ("GET", "/api/v1/csat/..%2ftickets"),
    ("GET", "/t/%2e%2e/metrics"),
    ("GET", "/api/v1/unsubscribe/%2e%2e/%2e%2e/%2e%2e/metrics"),
    ("GET", "//api/v1/contacts"),
    ("GET", "/api/v1//contacts"),
    ("GET", "/api/v1/./contacts"),
    ("GET", "/api/v1/contacts/%2e"),
    ("GET", "/./health"),
]


def send(system: System, method: str, path: str, body: Any = None, **headers: str) -> tuple:
    """`path` exactly as given; (status, content type, parsed body or None)."""
    data = json.dumps(body).encode() if body is not None else b""
    connection = http.client.HTTPConnection("127.0.0.1", system.ports["gateway"], timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        headers = {**headers, "Content-Length": str(len(data))}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(data)
        answer = connection.getresponse()
        raw = answer.read()
        content_type = answer.getheader("Content-Type", "")
        parsed = json.loads(raw) if "json" in content_type and raw else None
        return answer.status, content_type, parsed
    finally:
        connection.close()


@pytest.fixture(scope="module")
def stale_admin(system: System, users, make_user) -> Caller:
    """An admin whose account was deactivated: the gateway refuses their token."""
    former = make_user("admin", "stale")
    off = users["admin"].patch(f"{system.api}/users/{former.id}", json={"active": False})
    assert off.status_code == 200, off.text
    assert former.get(f"{system.api}/webhooks").status_code == 401
    return former


def _webhook_urls(admin: Caller, system: System) -> list[str]:
    listed = admin.get(f"{system.api}/webhooks", params={"limit": 200})
    assert listed.status_code == 200, listed.text
    return [hook["url"] for hook in listed.json()["items"]]


@pytest.mark.parametrize("path", WEBHOOK_VIA_TRACKING)
def test_a_stale_admin_token_makes_no_webhook_through_dot_segments(
    system: System, users, stale_admin: Caller, path: str
):
    target = f"https://hooks.example.com/{uuid.uuid4()}"
    body = {"url": target, "event_types": ["contact.created"]}

    status, content_type, problem = send(
        system, "POST", path, body, Authorization=f"Bearer {stale_admin.token}"
    )

    assert (status, content_type) == (400, "application/problem+json"), (path, status)
    assert problem["status"] == 400 and "URL path" in problem["detail"]
    assert target not in _webhook_urls(users["admin"], system)


@pytest.mark.parametrize(("method", "path"), OTHER_DETOURS)
def test_no_public_prefix_leads_into_another_route(system: System, users, method, path):
    deals_before = users["admin"].get(f"{system.api}/deals", params={"limit": 200}).json()
    body = {"name": "free deal", "amount": "1.00"} if method == "POST" else None

    status, content_type, _problem = send(system, method, path, body)

    assert (status, content_type) == (400, "application/problem+json"), (method, path, status)
    deals_after = users["admin"].get(f"{system.api}/deals", params={"limit": 200}).json()
    assert deals_after == deals_before


def test_the_same_routes_written_normally_still_answer(system: System, users):
    token = {"Authorization": f"Bearer {users['admin'].token}"}
    assert send(system, "GET", "/api/v1/contacts", **token)[0] == 200
    assert send(system, "GET", "/api/v1/contacts/", **token)[0] == 200
    assert send(system, "GET", "/t/o/not-a-token.gif")[0] == 200
    assert send(system, "GET", "/health")[0] == 200
