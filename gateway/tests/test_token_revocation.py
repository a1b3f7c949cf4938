"""Access tokens end when the account changes, live 15 minutes, and only they open the
gateway: logout, a new password, a role change and deactivation each end every access
token issued before; tokens of another purpose or kind are 401."""

from __future__ import annotations

import time

import jwt
import pytest

from gateway import service_tokens
from gateway.tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, bearer
from shared.auth import ALGORITHM, ISSUER, Principal, issue_service_token, signing_key
from shared.keys import ACCESS_TOKEN

ME = "/api/v1/me"
USERS = "/api/v1/users"
PASSWORD = "password-123"


def sign_in(client, email: str, password: str = PASSWORD) -> dict:
    answer = client.post("/api/v1/auth/token", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def assert_401(answer) -> None:
    assert answer.status_code == 401, answer.get_json()
    assert answer.headers["Content-Type"].startswith("application/problem+json")


@pytest.fixture
def ada(client, make_user) -> tuple[str, dict]:
    """A sales user, signed in: (id, the sign-in answer)."""
    user = make_user("ada@example.com")
    return user.id, sign_in(client, "ada@example.com")


def test_logout_ends_the_access_tokens_issued_before(client, ada):
    _, session = ada
    assert client.get(ME, headers=bearer(session["access_token"])).status_code == 200

    logout = {"refresh_token": session["refresh_token"]}
    assert client.post("/api/v1/auth/logout", json=logout).status_code == 204

    assert_401(client.get(ME, headers=bearer(session["access_token"])))
    again = sign_in(client, "ada@example.com")  # at once, even within the same second
    assert client.get(ME, headers=bearer(again["access_token"])).status_code == 200


@pytest.mark.parametrize(
    "change",
    [{"password": "a brand new password"}, {"role": "viewer"}, {"active": False}],
    ids=["password", "role", "deactivation"],
)
def test_an_account_change_ends_the_access_tokens_issued_before(client, admin_headers, ada, change):
    user_id, session = ada
    old = bearer(session["access_token"])
    assert client.get("/api/v1/contacts", headers=old).status_code != 401

    changed = client.patch(f"{USERS}/{user_id}", json=change, headers=admin_headers)
    assert changed.status_code == 200, changed.get_json()

    assert_401(client.get(ME, headers=old))
    assert_401(client.get("/api/v1/contacts", headers=old))
    if change.get("active") is not False:
        password = change.get("password", PASSWORD)
        fresh = sign_in(client, "ada@example.com", password)["access_token"]
        assert client.get(ME, headers=bearer(fresh)).status_code == 200


def test_a_name_change_ends_nothing(client, admin_headers, ada):
    user_id, session = ada
    renamed = client.patch(f"{USERS}/{user_id}", json={"name": "Ada L."}, headers=admin_headers)
    assert renamed.status_code == 200
    assert client.get(ME, headers=bearer(session["access_token"])).status_code == 200


def test_access_tokens_live_fifteen_minutes_by_default(client, app):
    body = sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert body["expires_in"] == 900
    key = signing_key(app.extensions["crm.settings"], ACCESS_TOKEN)
    claims = jwt.decode(body["access_token"], key, algorithms=[ALGORITHM], issuer=ISSUER)
    assert claims["exp"] - claims["iat"] <= 900


def _signed(app, kind: str, subject: str, role: str = "admin") -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": subject, "role": role, "kind": kind}
    claims |= {"iat": now, "exp": now + 600, "jti": "x"}
    return jwt.encode(claims, signing_key(app.extensions["crm.settings"], ACCESS_TOKEN), ALGORITHM)


@pytest.mark.parametrize("kind", ["api_key", "service", "admin"])
def test_a_bearer_token_of_any_kind_but_user_is_401(client, app, admin_headers, kind):
    key = client.post(
        "/api/v1/api-keys", json={"name": "k", "role": "admin"}, headers=admin_headers
    )
    token = _signed(app, kind, key.get_json()["id"])  # the right key; the wrong kind
    assert_401(client.get(USERS, headers=bearer(token)))
    assert_401(client.get("/api/v1/contacts", headers=bearer(token)))


def test_a_service_call_token_opens_nothing_at_the_gateway(client, app):
    me = client.get(
        ME, headers=bearer(sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)["access_token"])
    )
    admin = Principal(me.get_json()["id"], "admin", ADMIN_EMAIL)
    token = issue_service_token(app.extensions["crm.settings"], admin)
    assert_401(client.get(USERS, headers=bearer(token)))


def test_the_minted_service_token_is_reused_for_a_while(app, monkeypatch):
    settings, minted = app.extensions["crm.settings"], service_tokens.ServiceTokens()
    ada = Principal("u-1", "sales", "ada@example.com")
    clock = [1000.0]
    monkeypatch.setattr(service_tokens.time, "monotonic", lambda: clock[0])
    first = minted.token_for(settings, ada)
    clock[0] += service_tokens.REUSE_SECONDS - 1
    assert minted.token_for(settings, ada) == first
    assert minted.token_for(settings, Principal("u-1", "viewer", "ada@example.com")) != first
    clock[0] += 2
    assert minted.token_for(settings, ada) != first  # always at least half its life left


def test_timing_of_forwarding_tokens(app, capsys):
    """Not a limit, a figure for the report: minting per call versus reusing."""
    settings, ada = app.extensions["crm.settings"], Principal("u-1", "sales", "a@example.com")
    timings: dict[str, float] = {}
    for name, mint in (
        ("mint", lambda: issue_service_token(settings, ada)),
        ("reuse", lambda: service_tokens.service_token(settings, ada)),
    ):
        started = time.perf_counter()
        for _ in range(2000):
            mint()
        timings[name] = (time.perf_counter() - started) / 2000 * 1e6
    with capsys.disabled():
        print(f"\nservice token: mint {timings['mint']:.1f} us, reuse {timings['reuse']:.1f} us")
    assert timings["reuse"] < timings["mint"]
