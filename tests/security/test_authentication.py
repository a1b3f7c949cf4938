"""API2 (broken authentication), through the running system and around the gateway.

Forged, expired and wrong-algorithm tokens open nothing: not at the gateway, and not at
any service reached directly on its own port, which accepts only the short-lived tokens
the gateway forwards (never a client's access token). Credentials that were taken back (a
deactivated user, a demoted admin, a logout, a new password, a revoked API key, a spent
refresh token) stop working everywhere, and repeated wrong passwords hold that client back.
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

from shared.keys import ACCESS_TOKEN, SERVICE_CALL, purpose_key
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

# The keys the running system signs with (derived from its secret, as shared.keys does).
ACCESS_KEY = purpose_key(JWT_SECRET, ACCESS_TOKEN)
SERVICE_KEY = purpose_key(JWT_SECRET, SERVICE_CALL)
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


def valid_but_refused_tokens(subject: str, key: bytes) -> dict[str, str]:
    """Tokens signed with the real key (or the secret itself) that must still be refused."""
    return {
        "expired": jwt.encode(_claims(subject, exp=int(time.time()) - 60), key, "HS256"),
        "hs512": _hs("HS512", _claims(subject), key, hashlib.sha512),
        "other-issuer": jwt.encode(_claims(subject, iss="evil"), key, "HS256"),
        "unknown-role": jwt.encode(_claims(subject, role="root"), key, "HS256"),
        "no-expiry": jwt.encode(
            {k: v for k, v in _claims(subject).items() if k != "exp"}, key, "HS256"
        ),
        "the-raw-secret": jwt.encode(_claims(subject), JWT_SECRET, "HS256"),
        "another-purposes-key": jwt.encode(
            _claims(subject), ACCESS_KEY if key == SERVICE_KEY else SERVICE_KEY, "HS256"
        ),
    }


def _get(url: str, token: str | None = None, **headers: str) -> requests.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(url, headers=headers, timeout=TIMEOUT)


def test_forged_tokens_open_nothing_at_the_gateway_or_any_service(system, users):
    genuine, subject = users["viewer"].token, users["viewer"].id
    bases = {"gateway": system.api} | {name: system.service_api(name) for name in READS}
    for where, base in bases.items():
        key = ACCESS_KEY if where == "gateway" else SERVICE_KEY
        bad = {**forged_tokens(genuine), **valid_but_refused_tokens(subject, key)}
        paths = READS.values() if where == "gateway" else [READS[where]]
        for kind, token in bad.items():
            for path in paths:
                answer = _get(f"{base}{path}", token)
                assert answer.status_code == 401, (kind, where, path, answer.text[:300])
            if where == "gateway":
                assert _get(f"{system.api}/me", token).status_code == 401, kind


def test_a_bearer_token_of_kind_api_key_is_401_at_the_gateway(system, users):
    made = users["admin"].post(f"{system.api}/api-keys", json={"name": "kind", "role": "admin"})
    assert made.status_code == 201, made.text
    for kind in ("api_key", "service"):
        # The right key, a real key's id: only the kind says it is no user's access token.
        token = jwt.encode(_claims(made.json()["id"], kind=kind), ACCESS_KEY, "HS256")
        for path in ["/users", "/api-keys", *READS.values()]:
            assert_problem(_get(f"{system.api}{path}", token), 401)


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
        # A client's genuine access token is no service-call token: 401 around the gateway.
        assert_problem(_get(url, users["admin"].token), 401)
        # What the gateway forwards (needs the secret) works.
        forwarded = jwt.encode(_claims(users["admin"].id), SERVICE_KEY, "HS256")
        assert _get(url, forwarded).status_code == 200


def test_a_deactivated_users_access_token_stops_at_once_at_the_gateway_and_every_service(
    system, users, make_user: Callable[..., Caller]
):
    leaver = make_user("sales", "leaver")
    assert leaver.get(f"{system.api}/deals").status_code == 200

    off = users["admin"].patch(f"{system.api}/users/{leaver.id}", json={"active": False})
    assert off.status_code == 200, off.text

    for path in [*READS.values(), "/me", f"/customers/{uuid.uuid4()}", "/dashboard"]:
        assert_problem(leaver.get(f"{system.api}{path}"), 401)
    assert_problem(leaver.post(f"{system.api}/deals", json={"name": "one last deal"}), 401)
    # Around the gateway, straight to each service: refused there too.
    for name, path in READS.items():
        assert_problem(leaver.get(f"{system.service_api(name)}{path}"), 401)
    direct = leaver.post(f"{system.service_api('sales')}/deals", json={"name": "sneaky deal"})
    assert_problem(direct, 401)
    assert_problem(sign_in(system, leaver.email, PASSWORD), 401)


def test_logout_and_a_new_password_end_earlier_access_tokens_everywhere(
    system, users, make_user: Callable[..., Caller]
):
    quitter = make_user("support", "quitter")
    session = sign_in(system, quitter.email, PASSWORD).json()
    before = Caller(quitter.user, PASSWORD)
    before.session.headers["Authorization"] = f"Bearer {session['access_token']}"
    assert before.get(f"{system.api}/tickets").status_code == 200
    assert quitter.get(f"{system.api}/tickets").status_code == 200

    logout = {"refresh_token": session["refresh_token"]}
    out = requests.post(f"{system.api}/auth/logout", json=logout, timeout=TIMEOUT)
    assert out.status_code == 204, out.text
    for caller in (before, quitter):  # every access token issued before, on any device
        assert_problem(caller.get(f"{system.api}/tickets"), 401)
        assert_problem(caller.get(f"{system.service_api('support')}/tickets"), 401)

    again = signed_in(system, quitter.user, PASSWORD)
    assert again.get(f"{system.api}/tickets").status_code == 200
    new_password = {"password": "another long password"}
    changed = users["admin"].patch(f"{system.api}/users/{quitter.id}", json=new_password)
    assert changed.status_code == 200, changed.text
    assert_problem(again.get(f"{system.api}/tickets"), 401)
    assert signed_in(system, quitter.user, new_password["password"])


def test_a_demoted_admins_access_token_loses_admin_rights_at_once(
    system, users, make_user: Callable[..., Caller]
):
    former = make_user("admin", "former")
    assert former.get(f"{system.api}/webhooks").status_code == 200

    demoted = users["admin"].patch(f"{system.api}/users/{former.id}", json={"role": "viewer"})
    assert demoted.status_code == 200, demoted.text

    # The token issued before the change is over at once.
    assert_problem(former.get(f"{system.api}/webhooks"), 401)
    assert_problem(former.post(f"{system.api}/webhooks", json={}), 401)
    assert_problem(former.get(f"{system.api}/users"), 401)
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


def test_repeated_wrong_passwords_hold_that_client_back_even_for_the_right_one(system, make_user):
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
