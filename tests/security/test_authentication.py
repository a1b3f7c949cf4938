"""API2 (broken authentication), through the running system and around the gateway.

Forged, expired and wrong-algorithm tokens open nothing: not at the gateway, and not at
any service reached directly on its own port. Credentials that were taken back (a
deactivated user, a demoted admin, a revoked API key, a spent refresh token) stop working
everywhere, and repeated wrong passwords lock the account.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Callable

import jwt
import pytest
import requests

from tests.security.conftest import (
    JWT_SECRET,
    PASSWORD,
    TIMEOUT,
    Caller,
    assert_problem,
    b64url,
    jwt_parts,
    sign_in,
    signed_in,
    unsigned_jwt,
)

pytestmark = pytest.mark.xdist_group("crm-run")

# One read route of each service (what a stolen or forged token would be used on).
READS = {
    "contacts": "/contacts",
    "sales": "/deals",
    "support": "/tickets",
    "marketing": "/campaigns",
    "notifications": "/webhooks",
}


def _claims(sub: str, role: str = "admin", **changes) -> dict:
    now = int(time.time())
    claims = {"iss": "crm-gateway", "sub": sub, "role": role, "kind": "user"}
    return {**claims, "iat": now, "exp": now + 600, "jti": str(uuid.uuid4()), **changes}


def _hs(header_alg: str, claims: dict, key: bytes, digest=hashlib.sha256) -> str:
    """A token whose header says `header_alg`, HMAC-signed with `key`."""
    header = b64url(f'{{"alg":"{header_alg}","typ":"JWT"}}'.encode())
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), digest).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def forged_tokens(genuine: str) -> dict[str, str]:
    """Tokens an attacker can make without the signing secret, all claiming admin."""
    header, claims, signature = jwt_parts(genuine)
    admin = {**claims, "role": "admin"}
    return {
        "tampered-role": unsigned_jwt(header, admin, signature),
        "alg-none": unsigned_jwt({"alg": "none", "typ": "JWT"}, admin),
        "alg-None-with-signature": unsigned_jwt({"alg": "None"}, admin, signature),
        "other-secret": jwt.encode(admin, "not-the-secret-" + "x" * 40, algorithm="HS256"),
        "rs256-header": unsigned_jwt({"alg": "RS256"}, admin, b64url(os.urandom(256))),
        "empty-secret": _hs("HS256", admin, b""),
        "signature-stripped": genuine.rsplit(".", 1)[0] + ".",
        "garbage": "eyJhbGciOiJIUzI1NiJ9.e30.AAAA",
    }


def valid_but_refused_tokens(subject: str) -> dict[str, str]:
    """Tokens signed with the real secret that must still be refused."""
    return {
        "expired": jwt.encode(_claims(subject, exp=int(time.time()) - 60), JWT_SECRET, "HS256"),
        "hs512": _hs("HS512", _claims(subject), JWT_SECRET.encode(), hashlib.sha512),
        "other-issuer": jwt.encode(_claims(subject, iss="evil"), JWT_SECRET, "HS256"),
        "unknown-role": jwt.encode(_claims(subject, role="root"), JWT_SECRET, "HS256"),
        "no-expiry": jwt.encode(
            {k: v for k, v in _claims(subject).items() if k != "exp"}, JWT_SECRET, "HS256"
        ),
    }


def _get(url: str, token: str | None = None, **headers: str) -> requests.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(url, headers=headers, timeout=TIMEOUT)


def test_forged_tokens_open_nothing_at_the_gateway_or_any_service(system, users):
    genuine = users["viewer"].token
    bad = {**forged_tokens(genuine), **valid_but_refused_tokens(users["viewer"].id)}
    bases = {"gateway": system.api} | {name: system.service_api(name) for name in READS}
    for kind, token in bad.items():
        for where, base in bases.items():
            paths = READS.values() if where == "gateway" else [READS[where]]
            for path in paths:
                answer = _get(f"{base}{path}", token)
                assert answer.status_code == 401, (kind, where, path, answer.text[:300])
        assert _get(f"{system.api}/me", token).status_code == 401, kind


def test_each_service_reached_directly_wants_a_token_of_its_own_checking(system, users):
    key = users["admin"].post(f"{system.api}/api-keys", json={"name": "k", "role": "admin"})
    assert key.status_code == 201, key.text
    for name, path in READS.items():
        url = f"{system.service_api(name)}{path}"
        assert_problem(_get(url), 401)
        # Headers a careless service might believe: a key, a role, a user id.
        assert_problem(_get(url, **{"X-API-Key": key.json()["key"]}), 401)
        assert_problem(_get(url, **{"X-User-Role": "admin", "X-User-Id": users["admin"].id}), 401)
        assert_problem(_get(url, "Basic " + b64url(b"root:root")), 401)
        assert _get(url, users["admin"].token).status_code == 200  # a genuine token works


def test_a_deactivated_users_access_token_stops_working_at_once_everywhere(
    system, users, make_user: Callable[..., Caller]
):
    leaver = make_user("sales", "leaver")
    assert leaver.get(f"{system.api}/deals").status_code == 200

    off = users["admin"].patch(f"{system.api}/users/{leaver.id}", json={"active": False})
    assert off.status_code == 200, off.text

    for path in [*READS.values(), "/me", f"/customers/{uuid.uuid4()}", "/dashboard"]:
        assert_problem(leaver.get(f"{system.api}{path}"), 401)
    assert_problem(leaver.post(f"{system.api}/deals", json={"name": "one last deal"}), 401)
    assert_problem(sign_in(system, leaver.email, PASSWORD), 401)


def test_a_demoted_admins_access_token_loses_admin_rights_at_once(
    system, users, make_user: Callable[..., Caller]
):
    former = make_user("admin", "former")
    assert former.get(f"{system.api}/webhooks").status_code == 200

    demoted = users["admin"].patch(f"{system.api}/users/{former.id}", json={"role": "viewer"})
    assert demoted.status_code == 200, demoted.text

    assert former.get(f"{system.api}/webhooks").status_code in (401, 403)
    assert former.post(f"{system.api}/webhooks", json={}).status_code in (401, 403)
    assert former.get(f"{system.api}/users").status_code in (401, 403)
    again = signed_in(system, former.user, PASSWORD)
    assert_problem(again.get(f"{system.api}/webhooks"), 403)


def test_a_revoked_api_key_opens_nothing_behind_the_gateway(system, users):
    admin = users["admin"]
    made = admin.post(f"{system.api}/api-keys", json={"name": "ci", "role": "sales"})
    assert made.status_code == 201, made.text
    key = {"X-API-Key": made.json()["key"]}
    assert _get(f"{system.api}/deals", **key).status_code == 200

    assert admin.delete(f"{system.api}/api-keys/{made.json()['id']}").status_code == 204

    for path in READS.values():
        assert_problem(_get(f"{system.api}{path}", **key), 401)
    assert "key" not in admin.get(f"{system.api}/api-keys/{made.json()['id']}").json()


def test_a_replayed_refresh_token_revokes_the_whole_session(system, make_user):
    user = make_user("support", "refresher")
    first = sign_in(system, user.email, PASSWORD).json()
    url = f"{system.api}/auth/refresh"
    second = requests.post(url, json={"refresh_token": first["refresh_token"]}, timeout=TIMEOUT)
    assert second.status_code == 200, second.text

    stolen = requests.post(url, json={"refresh_token": first["refresh_token"]}, timeout=TIMEOUT)
    assert_problem(stolen, 401)
    legit = {"refresh_token": second.json()["refresh_token"]}
    assert_problem(requests.post(url, json=legit, timeout=TIMEOUT), 401)
    # Neither kind of token passes for the other.
    as_access = _get(f"{system.api}/tickets", second.json()["refresh_token"])
    assert_problem(as_access, 401)
    access = {"refresh_token": second.json()["access_token"]}
    assert requests.post(url, json=access, timeout=TIMEOUT).status_code in (401, 422)


def test_repeated_wrong_passwords_lock_the_account_even_for_the_right_one(system, make_user):
    victim = make_user("marketing", "victim")
    for _ in range(5):
        assert_problem(sign_in(system, victim.email, "wrong password!"), 401)

    locked = sign_in(system, victim.email, PASSWORD)

    assert_problem(locked, 429)
    assert int(locked.headers["Retry-After"]) > 0
    assert "access_token" not in locked.text


def test_team_visibility_taken_back_is_gone_from_tokens_issued_before(system, users, make_user):
    admin, ben = users["admin"], users["sales_b"]
    bens_deal = ben.post(f"{system.api}/deals", json={"name": "Ben's team-only deal"})
    assert bens_deal.status_code == 201, bens_deal.text
    lead = make_user("sales", "teamlead")
    url = f"{system.api}/users/{lead.id}"
    assert admin.patch(url, json={"team_visibility": True}).status_code == 200
    lead = signed_in(system, lead.user, PASSWORD)
    deal_url = f"{system.api}/deals/{bens_deal.json()['id']}"
    assert lead.get(deal_url).status_code == 200

    assert admin.patch(url, json={"team_visibility": False}).status_code == 200

    assert_problem(lead.get(deal_url), 404)
    listed = lead.get(f"{system.api}/deals", params={"limit": 200}).json()["items"]
    assert bens_deal.json()["id"] not in {deal["id"] for deal in listed}
