"""API3 (broken object property-level authorization), through the running system.

Mass assignment: fields the server keeps (ids, owners, roles, money it adds up, SLA state,
campaign figures, timestamps, hashes) are refused when a client sends them, or ignored,
and never applied. Answers never carry a password, a hash or a secret, except a new API
key or webhook secret, once, to the admin who made it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests

from tests.security.conftest import Caller, System, assert_problem

pytestmark = pytest.mark.xdist_group("crm-run")

FORGED_ID = "0badc0de-0000-4000-8000-000000000001"
LONG_AGO = "2001-01-01T00:00:00Z"


def made(answer: Any) -> dict[str, Any]:
    assert answer.status_code == 201, answer.text
    return answer.json()


def refused_or_ignored(answer: Any, field: str, value: Any) -> None:
    """A write naming a server-kept field: 4xx, or the field did not take the value."""
    if answer.status_code >= 400:
        assert_problem(answer, 403, 409, 422)
        return
    assert answer.status_code in (200, 201), answer.text
    body = answer.json()
    assert body.get(field) != value, (field, body.get(field))


@pytest.fixture(scope="module")
def segment(system: System, users: dict[str, Caller]) -> dict[str, Any]:
    body = {"name": "Mass assignment", "kind": "static"}
    return made(users["marketing"].post(f"{system.api}/segments", json=body))


def _new(kind: str, system: System, users: dict[str, Caller], segment: dict) -> tuple:
    """(caller, path, a valid new record's body) of each kind of record."""
    unique = uuid.uuid4().hex[:8]
    return {
        "contacts": (
            users["sales"],
            "contacts",
            {"first_name": "Mass", "email": f"mass-{unique}@customer.example"},
        ),
        "tickets": (
            users["support"],
            "tickets",
            {"subject": "Mass", "requester": {"email": f"t-{unique}@customer.example"}},
        ),
        "campaigns": (users["marketing"], "campaigns", {"name": "M", "segment_id": segment["id"]}),
        "deals": (users["sales"], "deals", {"name": f"Mass {unique}"}),
        "leads": (users["sales"], "leads", {"first_name": "M", "email": f"l-{unique}@x.example"}),
        "tasks": (users["sales"], "tasks", {"title": "Mass"}),
    }[kind]


# Fields a client may not set, with the value an attacker would like them to have.
SERVER_KEPT = [
    ("contacts", "lifetime_value", {"amount": "1000000.00", "currency": "EUR"}),
    ("contacts", "last_activity_at", LONG_AGO),
    ("contacts", "created_at", LONG_AGO),
    ("contacts", "version", 99),
    ("tickets", "sla_breached", True),
    ("tickets", "first_response_due_at", LONG_AGO),
    ("tickets", "created_at", LONG_AGO),
    ("campaigns", "status", "sent"),
    ("campaigns", "stats", {"recipients": 10**6, "sent": 10**6, "opened": 10**6}),
    ("campaigns", "sent_at", LONG_AGO),
    ("deals", "status", "won"),
    ("deals", "closed_at", LONG_AGO),
    ("deals", "created_at", LONG_AGO),
    ("leads", "score", 100),
    ("leads", "status", "converted"),
    ("leads", "converted_contact_id", FORGED_ID),
    ("tasks", "completed_at", LONG_AGO),
    ("tasks", "created_at", LONG_AGO),
]


@pytest.mark.parametrize(("kind", "field", "value"), SERVER_KEPT)
def test_a_server_kept_field_is_never_taken_from_a_create(
    system, users, segment, kind, field, value
):
    caller, path, body = _new(kind, system, users, segment)

    answer = caller.post(f"{system.api}/{path}", json={**body, field: value})

    refused_or_ignored(answer, field, value)


@pytest.mark.parametrize(("kind", "field", "value"), SERVER_KEPT)
def test_a_server_kept_field_is_never_taken_from_an_update(
    system, users, segment, kind, field, value
):
    caller, path, body = _new(kind, system, users, segment)
    record = made(caller.post(f"{system.api}/{path}", json=body))
    url = f"{system.api}/{path}/{record['id']}"

    refused_or_ignored(caller.patch(url, json={field: value}), field, value)
    refused_or_ignored(caller.patch(url, json={"id": FORGED_ID}), "id", FORGED_ID)

    after = caller.get(url).json()
    assert after.get(field) != value and after["id"] == record["id"]


@pytest.mark.parametrize("kind", ["deals", "leads", "tasks"])
def test_a_sales_user_cannot_give_their_record_away(system, users, segment, kind):
    ana, ben = users["sales"], users["sales_b"]
    _caller, path, body = _new(kind, system, users, segment)
    assert_problem(ana.post(f"{system.api}/{path}", json={**body, "owner_id": ben.id}), 403)
    mine = made(ana.post(f"{system.api}/{path}", json=body))
    assert mine["owner_id"] == ana.id

    assert_problem(ana.patch(f"{system.api}/{path}/{mine['id']}", json={"owner_id": ben.id}), 403)
    if kind != "tasks":  # a batch answers per input: that input is refused, 403
        batch = {"inputs": [{"id": mine["id"], "owner_id": ben.id}]}
        answer = ana.post(f"{system.api}/{path}/batch/update", json=batch)
        assert answer.status_code == 207 and answer.json()["results"][0]["status"] == 403
        batch = {"inputs": [{**body, "owner_id": ben.id}]}
        answer = ana.post(f"{system.api}/{path}/batch/create", json=batch)
        assert answer.status_code == 207 and answer.json()["results"][0]["status"] == 403

    assert ana.get(f"{system.api}/{path}/{mine['id']}").json()["owner_id"] == ana.id


# Bodies a check once read as "no JSON" while the route parsed them anyway: refused, 415.
NOT_JSON = ["text/plain", None, "application/json; charset=latin-1", "text/plain; x=json"]
# JSON however it is spelled: read, and the owner rule refuses the gift, 403.
JSON_SPELLINGS = ["application/json; charset=utf-8", "Application/JSON;Charset=UTF-8"]


def _send(caller: Caller, method: str, url: str, body: dict, content_type: str | None) -> Any:
    """`body` as JSON text under any Content-Type (None: no Content-Type header at all)."""
    headers = {"Content-Type": content_type} if content_type else {}
    request = requests.Request(method, url, data=json.dumps(body).encode(), headers=headers)
    prepared = caller.session.prepare_request(request)
    if content_type is None:
        prepared.headers.pop("Content-Type", None)
    return caller.session.send(prepared, timeout=10)


def _ids_of(caller: Caller, url: str) -> set[str]:
    return {item["id"] for item in caller.get(url, params={"limit": 200}).json()["items"]}


@pytest.mark.parametrize("kind", ["deals", "leads", "tasks"])
@pytest.mark.parametrize(
    ("content_type", "status"), [(t, 415) for t in NOT_JSON] + [(t, 403) for t in JSON_SPELLINGS]
)
def test_no_media_type_lets_a_sales_user_give_a_record_away(
    system, users, segment, kind, content_type, status
):
    ana, ben = users["sales"], users["sales_b"]
    _caller, path, body = _new(kind, system, users, segment)
    mine = made(ana.post(f"{system.api}/{path}", json=body))
    url = f"{system.api}/{path}/{mine['id']}"
    bens_before = _ids_of(ben, f"{system.api}/{path}")

    assert_problem(_send(ana, "PATCH", url, {"owner_id": ben.id}, content_type), status)
    created = _send(ana, "POST", f"{system.api}/{path}", {**body, "owner_id": ben.id}, content_type)
    assert_problem(created, status)

    assert ana.get(url).json()["owner_id"] == ana.id
    assert ana.get(url).json()["version"] == mine["version"]
    assert _ids_of(ben, f"{system.api}/{path}") == bens_before


@pytest.mark.parametrize("role", ["sales", "support", "marketing", "viewer"])
def test_no_user_can_change_their_own_role(system, users, role):
    caller = users[role]
    me = f"{system.api}/users/{caller.id}"

    assert_problem(caller.patch(me, json={"role": "admin"}), 403)
    assert caller.patch(f"{system.api}/me", json={"role": "admin"}).status_code in (403, 405)
    new_admin = {"email": f"x-{role}@x.example", "role": "admin", "password": "p" * 12}
    assert_problem(caller.post(f"{system.api}/users", json=new_admin), 403)

    assert caller.get(f"{system.api}/me").json()["role"] == role


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("password_hash", "$argon2id$forged"),
        ("id", FORGED_ID),
        ("version", 7),
        ("created_at", LONG_AGO),
    ],
)
def test_an_admin_cannot_set_a_users_server_kept_fields_either(system, users, field, value):
    body = {"email": f"{uuid.uuid4().hex[:8]}@x.example", "role": "viewer", "password": "p" * 12}
    assert_problem(users["admin"].post(f"{system.api}/users", json={**body, field: value}), 422)
    viewer = users["viewer"]
    url = f"{system.api}/users/{viewer.id}"
    assert_problem(users["admin"].patch(url, json={field: value}), 422)


def _secrets_absent(text: str, *secrets: str) -> None:
    lowered = text.lower()
    assert "password" not in lowered and "$argon2" not in text and "_hash" not in lowered
    for secret in secrets:
        assert secret not in text


def test_answers_never_carry_passwords_hashes_or_secrets(system, users):
    admin = users["admin"]
    key = made(admin.post(f"{system.api}/api-keys", json={"name": "shown once", "role": "viewer"}))
    hook = {"url": "https://hooks.example.com/crm", "event_types": ["deal.won"], "active": False}
    webhook = made(admin.post(f"{system.api}/webhooks", json=hook))
    assert key["key"] and webhook["secret"]  # once, to the admin who made them

    for path in (
        "/users",
        f"/users/{users['sales'].id}",
        "/me",
        "/api-keys",
        f"/api-keys/{key['id']}",
        "/webhooks",
        f"/webhooks/{webhook['id']}",
    ):
        answer = admin.get(f"{system.api}{path}")
        assert answer.status_code == 200, (path, answer.text)
        _secrets_absent(answer.text, key["key"], key["key"].rsplit("_", 1)[1], webhook["secret"])
    _secrets_absent(users["sales"].get(f"{system.api}/me").text)


def test_a_lead_conversion_cannot_give_the_new_deal_to_someone_else(system, users):
    ana, ben = users["sales"], users["sales_b"]
    body = {"first_name": "Conv", "email": f"conv-{uuid.uuid4().hex[:6]}@x.example"}
    lead = made(ana.post(f"{system.api}/leads", json=body))
    url = f"{system.api}/leads/{lead['id']}/convert"

    answer = ana.post(url, json={"deal": {"name": "For Ben", "owner_id": ben.id}})

    assert_problem(answer, 403)
    names = {
        d["name"] for d in ben.get(f"{system.api}/deals", params={"limit": 200}).json()["items"]
    }
    assert "For Ben" not in names
    assert ana.get(f"{system.api}/leads/{lead['id']}").json()["status"] != "converted"
