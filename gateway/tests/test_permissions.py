"""The route × method × role table: every route, every role, allowed and refused.

The expectations are written out here on their own (not read from gateway.permissions), so
a change to who may do what shows up as a failing line in this table.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from werkzeug.datastructures import MultiDict

from gateway.app import PUBLIC_PREFIXES
from gateway.permissions import RULES, allowed
from gateway.proxy import ROUTES
from gateway.tests import test_proxy
from gateway.tests.conftest import close_app
from gateway.tests.test_proxy import Upstream, _gateway, token_for
from shared.auth import ROLES

ALL = set(ROLES)
WRITERS = ALL - {"viewer"}
ADMIN = {"admin"}


def _and_admin(*roles: str) -> set[str]:
    return {"admin", *roles}


# prefix: (roles that may read, roles that may change)
EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    "/api/v1/contacts": (ALL, WRITERS),
    "/api/v1/companies": (ALL, WRITERS),
    "/api/v1/custom-fields": (ALL, WRITERS),
    "/api/v1/tags": (ALL, WRITERS),
    "/api/v1/leads": (ALL, _and_admin("sales")),
    "/api/v1/lead-scoring-rules": (ALL, _and_admin("sales")),
    "/api/v1/pipelines": (ALL, ADMIN),
    "/api/v1/deals": (ALL, _and_admin("sales")),
    "/api/v1/tasks": (ALL, _and_admin("sales")),
    "/api/v1/reports/pipeline": (ALL, ADMIN),
    "/api/v1/reports/forecast": (ALL, ADMIN),
    "/api/v1/reports/win-rate": (ALL, ADMIN),
    "/api/v1/reports/funnel": (ALL, ADMIN),
    "/api/v1/reports/sales-cycle": (ALL, ADMIN),
    "/api/v1/reports/support": (ALL, ADMIN),
    "/api/v1/reports/marketing": (ALL, ADMIN),
    "/api/v1/tickets": (ALL, _and_admin("support")),
    "/api/v1/sla-policies": (ALL, _and_admin("support")),
    "/api/v1/templates": (ALL, _and_admin("marketing", "support")),
    "/api/v1/messages": (ALL, _and_admin("sales", "support", "marketing")),
    "/api/v1/reminders": (ALL, WRITERS),
    "/api/v1/webhooks": (ADMIN, ADMIN),
    "/api/v1/segments": (ALL, _and_admin("marketing")),
    "/api/v1/subscriptions": (ALL, _and_admin("marketing")),
    "/api/v1/subscription-lists": (ALL, _and_admin("marketing")),
    "/api/v1/suppressions": (ALL, _and_admin("marketing")),
    "/api/v1/campaigns": (ALL, _and_admin("marketing")),
    "/api/v1/automations": (ALL, _and_admin("marketing")),
    "/api/v1/subject-exports/contacts": (ADMIN, ADMIN),
    "/api/v1/subject-exports/sales": (ADMIN, ADMIN),
    "/api/v1/subject-exports/support": (ADMIN, ADMIN),
    "/api/v1/subject-exports/marketing": (ADMIN, ADMIN),
    "/api/v1/subject-exports/notifications": (ADMIN, ADMIN),
}
# The gateway's own routes (answered by the gateway, not forwarded).
OWN: dict[str, tuple[set[str], set[str]]] = {
    "/api/v1/users": (ADMIN, ADMIN),
    "/api/v1/api-keys": (ADMIN, ADMIN),
    "/api/v1/me": (ALL, ADMIN),
    "/api/v1/customers": (ALL, ADMIN),
    "/api/v1/dashboard": (ALL, ADMIN),
}
upstream = test_proxy.upstream  # the stand-in service, shared with the proxy tests
WRITES = ("POST", "PUT", "PATCH", "DELETE")
ID = "0b5e7a52-5d0c-4b7e-9d55-6a3a0c1f9e11"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, upstream: Upstream) -> Iterator[Flask]:
    app = _gateway(tmp_path_factory.mktemp("permissions"), upstream.url)
    yield app
    close_app(app)


def test_every_forwarded_route_has_a_row_in_the_table():
    public = {prefix for prefix in ROUTES if prefix.startswith(PUBLIC_PREFIXES) or prefix == "/t"}
    public |= {p for p in ROUTES if any((p + "/").startswith(x) for x in PUBLIC_PREFIXES)}
    assert set(ROUTES) - public <= set(EXPECTED)
    covered = {p for p in RULES if p not in ("/api/v1/reports", "/api/v1/subject-exports")}
    assert set(EXPECTED) | set(OWN) >= covered


@pytest.mark.parametrize("prefix", sorted(EXPECTED))
def test_each_role_is_allowed_or_refused_as_the_table_says(gateway, upstream, prefix):
    readers, writers = EXPECTED[prefix]
    client = gateway.test_client()
    for role in ROLES:
        headers = token_for(gateway, role)
        for method, path in _requests(prefix):
            upstream.calls.clear()
            answer = client.open(path, method=method, headers=headers, json={})
            may = role in (readers if method == "GET" or path.endswith("/search") else writers)
            if may:
                assert answer.status_code in (200, 201), (role, method, path, answer.get_json())
                assert [call["path"] for call in upstream.calls] == [path]
            else:
                assert answer.status_code == 403, (role, method, path, answer.status_code)
                assert answer.content_type == "application/problem+json"
                assert upstream.calls == [], (role, method, path)


def _requests(prefix: str) -> list[tuple[str, str]]:
    one = f"{prefix}/{ID}"
    return [
        ("GET", prefix),
        ("GET", one),
        ("POST", f"{prefix}/search"),
        *((method, one if method != "POST" else prefix) for method in WRITES),
    ]


@pytest.mark.parametrize("prefix", sorted(OWN))
def test_the_gateways_own_routes_follow_the_table_too(prefix):
    readers, writers = OWN[prefix]
    for role in ROLES:
        assert allowed(role, "GET", f"{prefix}/{ID}") is (role in readers), (role, prefix)
        for method in WRITES:
            assert allowed(role, method, prefix) is (role in writers), (role, method, prefix)


def test_only_an_admin_may_export_a_customer_whom_every_role_may_view():
    for role in ROLES:
        assert allowed(role, "GET", f"/api/v1/customers/{ID}/export") is (role == "admin"), role
        assert allowed(role, "GET", f"/api/v1/customers/{ID}/export/") is (role == "admin"), role
        assert allowed(role, "GET", f"/api/v1/customers/{ID}"), role


def test_only_an_admin_may_merge_contacts_which_every_writer_may_change():
    for role in ROLES:
        merge = allowed(role, "POST", f"/api/v1/contacts/{ID}/merge")
        assert merge is (role == "admin"), role
        assert allowed(role, "PATCH", f"/api/v1/contacts/{ID}") is (role in WRITERS), role
        assert allowed(role, "DELETE", f"/api/v1/contacts/{ID}") is (role in WRITERS), role


# However the flag is spelled, set once among several, the gateway reads it as set.
ERASE_QUERIES = [
    {"erase": ["true"]},
    {"erase": ["TRUE"]},
    {"erase": ["True "]},
    {"erase": ["1"]},
    {"erase": [""]},
    {"erase": ["false", "true"]},
    {"erase": ["true", "false"]},
]


@pytest.mark.parametrize("query", ERASE_QUERIES, ids=str)
def test_only_an_admin_may_erase_a_contact(query):
    for role in ROLES:
        flagged = allowed(role, "DELETE", f"/api/v1/contacts/{ID}", MultiDict(query))
        assert flagged is (role == "admin"), (role, query)
    plain = MultiDict({"erase": ["false"]})
    assert allowed("sales", "DELETE", f"/api/v1/contacts/{ID}", plain)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", f"/api/v1/contacts/{ID}?erase=true"),
        ("DELETE", f"/api/v1/contacts/{ID}?erase=false&erase=TRUE"),
        ("POST", f"/api/v1/contacts/{ID}/merge"),
        ("POST", "/api/v1/pipelines"),
        ("DELETE", f"/api/v1/pipelines/{ID}/stages/{ID}?move_to={ID}"),
    ],
)
def test_destructive_acts_of_other_roles_never_reach_the_service(gateway, upstream, method, path):
    client = gateway.test_client()
    for role in ("sales", "marketing", "support"):
        upstream.calls.clear()
        answer = client.open(path, method=method, headers=token_for(gateway, role), json={})
        assert answer.status_code == 403, (role, answer.get_json())
        assert answer.content_type == "application/problem+json"
        assert upstream.calls == []
    answer = client.open(path, method=method, headers=token_for(gateway, "admin"), json={})
    assert answer.status_code in (200, 201, 204) and len(upstream.calls) == 1


def test_a_viewer_asking_for_users_is_refused_before_anything_else(gateway):
    answer = gateway.test_client().get("/api/v1/users", headers=token_for(gateway, "viewer"))
    assert answer.status_code == 403
    assert "viewer" in answer.get_json()["detail"]


def test_public_links_and_logins_are_not_in_the_table():
    for path in ("/api/v1/auth/token", "/api/v1/forms/leads", "/api/v1/unsubscribe/x", "/t/o/x"):
        assert all(allowed(role, "POST", path) for role in ROLES)
