"""API5 (broken function-level authorization), through the running system.

Every role below admin calls every write route it may not use (and every admin-only read)
at the gateway and, with its genuine token, at the owning service directly: both answer
403 before doing anything. The admin routes (users, API keys, webhooks) and the routes of
other teams (pipelines, SLA policies, campaigns...) are covered by the same table the
gateway enforces, so a route added to it is attacked here too.
"""

from __future__ import annotations

import uuid

import pytest
import requests

from gateway.permissions import RULES, allowed
from gateway.proxy import ROUTES
from tests.security.conftest import Caller, System, assert_problem, forwarded

pytestmark = pytest.mark.xdist_group("crm-run")

ROLES_BELOW_ADMIN = ("sales", "support", "marketing", "viewer")
SOME_ID = "00000000-0000-4000-8000-00000000abcd"


def _owner(prefix: str) -> str | None:
    """The service a gateway prefix is forwarded to (None: the gateway's own route)."""
    return ROUTES.get(prefix) or next(
        (service for route, service in ROUTES.items() if prefix.startswith(route + "/")), None
    )


def _refused_calls(role: str) -> list[tuple[str, str]]:
    """(method, path) of the calls `role` may not make: writes, and reads where refused."""
    calls = []
    for prefix in RULES:
        for method, path in (
            ("POST", prefix),
            ("PATCH", f"{prefix}/{SOME_ID}"),
            ("DELETE", f"{prefix}/{SOME_ID}"),
            ("GET", prefix),
        ):
            if not allowed(role, method, path):
                calls.append((method, path))
    return calls


def _call(caller: Caller, method: str, url: str, headers: dict[str, str] | None = None):
    body = {} if method in ("POST", "PATCH") else None
    return caller.session.request(method, url, json=body, headers=headers, timeout=10)


@pytest.mark.parametrize("role", ROLES_BELOW_ADMIN)
def test_each_role_is_refused_what_it_may_not_do_at_the_gateway_and_the_service(
    system: System, users: dict[str, Caller], role: str
):
    caller = users[role]
    calls = _refused_calls(role)
    assert calls  # every role below admin is refused something
    for method, path in calls:
        at_gateway = _call(caller, method, f"{system.base}{path}")
        assert_problem(at_gateway, 403)
        service = _owner(path.removesuffix(f"/{SOME_ID}"))
        if service is None:
            continue
        url = f"http://127.0.0.1:{system.ports[service]}{path}"
        # Around the gateway the caller's own token opens nothing; with what the gateway
        # would forward for them, the service's own role check still refuses.
        assert_problem(_call(caller, method, url), 401)
        direct = _call(caller, method, url, forwarded(caller))
        assert direct.status_code in (403, 405), (role, method, path, direct.text[:200])


def test_the_admin_routes_named_in_the_brief_are_in_the_refused_table():
    for role in ROLES_BELOW_ADMIN:
        refused = set(_refused_calls(role))
        for path in ("/api/v1/users", "/api/v1/api-keys", "/api/v1/webhooks"):
            assert ("GET", path) in refused and ("POST", path) in refused, (role, path)
    for role in ROLES_BELOW_ADMIN:
        assert ("POST", "/api/v1/pipelines") in set(_refused_calls(role))
    for role in ("sales", "marketing", "viewer"):
        assert ("POST", "/api/v1/sla-policies") in set(_refused_calls(role))


def _made(answer: requests.Response) -> dict:
    assert answer.status_code == 201, answer.text
    return answer.json()


def _around_the_gateway(system: System, url: str) -> str:
    """The same call made to the owning service directly."""
    service = "contacts" if url.startswith(f"{system.api}/contacts") else "sales"
    return url.replace(system.base, f"http://127.0.0.1:{system.ports[service]}")


@pytest.mark.parametrize("role", ["sales", "marketing"])
def test_erase_merge_and_pipeline_changes_are_an_admins_at_the_gateway_and_the_service(
    system: System, users: dict[str, Caller], role: str
):
    caller, admin, api = users[role], users["admin"], system.api
    people = [
        _made(caller.post(f"{api}/contacts", json={"first_name": "P", "email": f"{n}@x.example"}))
        for n in (uuid.uuid4().hex, uuid.uuid4().hex)
    ]
    keep, twin = (f"{api}/contacts/{person['id']}" for person in people)
    [pipeline] = [p for p in admin.get(f"{api}/pipelines").json()["items"] if p["is_default"]]
    first, second = (stage["id"] for stage in pipeline["stages"][:2])
    stages = f"{api}/pipelines/{pipeline['id']}/stages"
    new_pipeline = {"name": "Mine", "stages": [{"name": "A", "probability": 5}]}
    # (method, url, body, the service's own answer when called around the gateway)
    attempts = [
        ("DELETE", f"{keep}?erase=true", None, 403),
        ("DELETE", f"{keep}?erase=false&erase=true", None, 422),  # which one? neither
        ("POST", f"{keep}/merge", {"duplicate_id": people[1]["id"]}, 403),
        ("POST", f"{api}/pipelines", new_pipeline, 403),
        ("PATCH", f"{stages}/{first}", {"probability": 99}, 403),
        ("DELETE", f"{stages}/{first}?move_to={second}", None, 403),
    ]
    for method, url, body, status in attempts:
        assert_problem(caller.session.request(method, url, json=body, timeout=10), 403)
        direct = _around_the_gateway(system, url)
        answer = requests.request(method, direct, json=body, headers=forwarded(caller), timeout=10)
        assert_problem(answer, status)

    assert caller.get(keep).status_code == 200 and caller.get(twin).status_code == 200
    assert admin.get(f"{api}/pipelines/{pipeline['id']}").json() == pipeline
    assert caller.delete(keep).status_code == 204  # a plain delete stays every writer's


def test_an_api_key_manages_no_keys_or_users_and_a_viewer_key_writes_nothing(system: System, users):
    admin = users["admin"]
    made = admin.post(f"{system.api}/api-keys", json={"name": "ops bot", "role": "admin"})
    assert made.status_code == 201, made.text
    bot = {"X-API-Key": made.json()["key"]}
    # Even an admin key may not mint keys or users (a leaked key must not persist itself).
    body = {"name": "k2", "role": "admin"}
    answer = requests.post(f"{system.api}/api-keys", json=body, headers=bot, timeout=10)
    assert_problem(answer, 401, 403)
    user = {"email": "planted@x.example", "role": "admin", "password": "p" * 12}
    answer = requests.post(f"{system.api}/users", json=user, headers=bot, timeout=10)
    assert_problem(answer, 401, 403)
    viewer_key = admin.post(f"{system.api}/api-keys", json={"name": "ro", "role": "viewer"})
    key = {"X-API-Key": viewer_key.json()["key"]}
    for method, path in (("POST", "/users"), ("GET", "/webhooks"), ("POST", "/deals")):
        answer = requests.request(method, f"{system.api}{path}", json={}, headers=key, timeout=10)
        assert_problem(answer, 403)
