"""API8 (security misconfiguration), through the running system.

Error answers are problem+json that name no stack frame, library or internal address;
every answer of the gateway (its own, forwarded, public) carries the security headers;
CORS never reflects an origin that is not configured (none is, here); no path makes the
gateway hand back a redirect into the private network.
"""

from __future__ import annotations

import pytest
import requests

from tests.security.conftest import TIMEOUT, System, assert_problem

pytestmark = pytest.mark.xdist_group("crm-run")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
REVEALING = ("Traceback", 'File "', "sqlalchemy", "psycopg", "werkzeug", "site-packages")


def _internal_addresses(system: System) -> list[str]:
    return [f"127.0.0.1:{port}" for name, port in system.ports.items() if name != "gateway"]


def _reveals_nothing(system: System, answer: requests.Response) -> None:
    text = answer.text + " ".join(f"{k}: {v}" for k, v in answer.headers.items())
    for word in (*REVEALING, *_internal_addresses(system)):
        assert word not in text, (word, answer.status_code, text[:500])


def test_error_answers_are_problems_that_reveal_nothing_inside(system: System, users):
    admin, api = users["admin"], system.api
    bad_json = {"Content-Type": "application/json"}
    answers = {
        400: admin.post(f"{api}/contacts", data="{oops", headers=bad_json),
        401: requests.get(f"{api}/deals", timeout=TIMEOUT),
        403: users["viewer"].post(f"{api}/deals", json={"name": "x"}),
        404: admin.get(f"{api}/deals/00000000-0000-4000-8000-000000000000"),
        405: admin.session.put(f"{api}/contacts", json={}, timeout=TIMEOUT),
        413: admin.post(f"{api}/tickets", data=b"x" * (1024 * 1024 + 1), headers=bad_json),
        422: admin.post(f"{api}/deals", json={"name": "x", "amount": "NaN", "stage": 1}),
    }
    for status, answer in answers.items():
        assert_problem(answer, status)
        _reveals_nothing(system, answer)
    for path in ("/nowhere", "/api/v1/nowhere", "/api/v1/contacts/not-a-uuid", "/t/o/x"):
        answer = admin.get(f"{system.base}{path}")
        assert answer.status_code in (200, 404), (path, answer.status_code)
        _reveals_nothing(system, answer)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/contacts//00000000-0000-4000-8000-000000000000",
        "//api/v1/contacts",
        "/t/c///evil.example/",
        "/t/c//evil.example",
        "/api/v1/unsubscribe//evil.example",
    ],
)
def test_no_path_redirects_into_the_private_network_or_elsewhere(system: System, users, path):
    answer = users["admin"].get(f"{system.base}{path}", allow_redirects=False)
    location = answer.headers.get("Location", "")
    assert not 300 <= answer.status_code < 400 or location.startswith("/"), (path, location)
    _reveals_nothing(system, answer)


def test_every_kind_of_gateway_answer_carries_the_security_headers(system: System, users):
    admin = users["admin"]
    answers = [
        admin.get(f"{system.api}/contacts"),  # forwarded
        admin.get(f"{system.api}/me"),  # the gateway's own
        requests.get(f"{system.api}/deals", timeout=TIMEOUT),  # refused
        requests.get(f"{system.base}/t/o/not-a-token.gif", timeout=TIMEOUT),  # public
        requests.get(f"{system.base}/health", timeout=TIMEOUT),
    ]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.url, name, answer.headers)
        assert "Content-Security-Policy" in answer.headers, answer.url


def test_cors_reflects_no_unconfigured_origin(system: System, users):
    evil = {"Origin": "https://evil.example"}
    answer = users["admin"].get(f"{system.api}/contacts", headers=evil)
    assert answer.status_code == 200
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert "Access-Control-Allow-Credentials" not in answer.headers
    preflight = requests.options(
        f"{system.api}/contacts",
        headers={
            **evil,
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "Authorization",
        },
        timeout=TIMEOUT,
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert "Access-Control-Allow-Methods" not in preflight.headers


def test_a_spoofed_host_header_changes_no_link_the_system_makes(system: System, users):
    admin = users["admin"]
    body = {"first_name": "Host", "email": "host@customer.example"}
    created = admin.post(f"{system.api}/contacts", json=body, headers={"Host": "evil.example"})
    assert created.status_code == 201, created.text
    assert "evil.example" not in created.headers.get("Location", "")
    forwarded = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    created = admin.post(
        f"{system.api}/contacts",
        json={**body, "email": "host2@customer.example"},
        headers=forwarded,
    )
    assert "evil.example" not in created.headers.get("Location", "")
    assert "Strict-Transport-Security" not in created.headers  # X-Forwarded-Proto not believed
