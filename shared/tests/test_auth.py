"""Token verification: one key per purpose, a verified token is remembered until it
expires, and no longer; a refused one never."""

from __future__ import annotations

import time

import jwt
import pytest

from shared import auth
from shared.auth import (
    ALGORITHM,
    ISSUER,
    Principal,
    VerifiedTokens,
    issue_service_token,
    issue_token,
    verify_token,
)
from shared.config import load_settings
from shared.keys import ACCESS_TOKEN, SERVICE_CALL, purpose_key
from shared.web import ApiError

SETTINGS = load_settings("contacts").with_overrides(jwt_secret="s" * 40)
ADA = Principal("7d4c8a52-3c1a-4d8e-9b1e-0e3b7f1f5a10", "sales", "ada@example.com")


def verify(token: str, settings=SETTINGS) -> Principal:
    return verify_token(settings, token, ACCESS_TOKEN)


def test_a_verified_token_is_not_decoded_again(monkeypatch):
    token = issue_token(SETTINGS, ADA)
    assert verify(token) == ADA
    calls = []
    monkeypatch.setattr(jwt, "decode", lambda *args, **kwargs: calls.append(args))
    assert verify(token) == ADA
    assert calls == []


def test_a_remembered_token_is_checked_again_once_it_expires(monkeypatch):
    token = issue_token(SETTINGS, ADA, ttl_seconds=60)
    assert verify(token) == ADA
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)

    def expired(*_args, **_kwargs):  # PyJWT reads its own clock: say what it would say
        raise jwt.ExpiredSignatureError("Signature has expired")

    monkeypatch.setattr(jwt, "decode", expired)
    with pytest.raises(ApiError) as refused:
        verify(token)
    assert refused.value.status == 401
    assert "expired" in refused.value.detail


def test_a_token_verified_under_one_secret_is_not_taken_under_another():
    token = issue_token(SETTINGS, ADA)
    assert verify(token) == ADA
    with pytest.raises(ApiError) as refused:
        verify(token, SETTINGS.with_overrides(jwt_secret="t" * 40))
    assert refused.value.status == 401


def test_a_refused_token_is_not_remembered(monkeypatch):
    # Signed with the right key and decodable, refused only on its claims: a cache filled
    # before the checks (or a refusal cached as an answer) would show in the calls below.
    key = purpose_key(SETTINGS.jwt_secret, ACCESS_TOKEN)
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": ADA.subject, "iat": now, "exp": now + 60, "kind": "user"}
    refused = jwt.encode({**claims, "role": "root"}, key, ALGORITHM)
    decoded = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    for _ in range(3):
        with pytest.raises(ApiError) as answer:
            verify(refused)
        assert answer.value.status == 401
    assert len(decoded) == 3  # checked afresh each time
    assert auth._VERIFIED.get(key, refused) is None


def test_a_token_of_one_purpose_never_verifies_as_another():
    access, service = issue_token(SETTINGS, ADA), issue_service_token(SETTINGS, ADA)
    assert verify_token(SETTINGS, service, SERVICE_CALL) == ADA
    for token, purpose in ((access, SERVICE_CALL), (service, ACCESS_TOKEN)):
        with pytest.raises(ApiError) as refused:
            verify_token(SETTINGS, token, purpose)
        assert refused.value.status == 401
    # Nor one signed with the secret itself (how every token was signed before).
    now = int(time.time())
    raw = {"iss": ISSUER, "sub": ADA.subject, "role": "admin", "kind": "user"}
    raw_token = jwt.encode({**raw, "iat": now, "exp": now + 60}, SETTINGS.jwt_secret, ALGORITHM)
    with pytest.raises(ApiError):
        verify(raw_token)


def test_an_access_token_names_a_user_only():
    key_principal = Principal("key-1", "admin", kind="api_key")
    with pytest.raises(ValueError):
        issue_token(SETTINGS, key_principal)
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "key-1", "role": "admin", "iat": now, "exp": now + 60}
    key = purpose_key(SETTINGS.jwt_secret, ACCESS_TOKEN)
    for kind in ("api_key", "service", None):
        forged = jwt.encode({**claims, "kind": kind}, key, ALGORITHM)
        with pytest.raises(ApiError) as refused:
            verify(forged)
        assert refused.value.status == 401, kind
    # A service-call token may name an API key (the gateway forwards a key's calls so).
    assert verify_token(SETTINGS, issue_service_token(SETTINGS, key_principal), SERVICE_CALL)


def test_no_token_is_made_or_taken_under_an_empty_secret():
    empty = SETTINGS.with_overrides(jwt_secret="")
    with pytest.raises(RuntimeError):
        issue_token(empty, ADA)
    with pytest.raises(RuntimeError):
        verify_token(empty, issue_token(SETTINGS, ADA), ACCESS_TOKEN)


def test_access_tokens_live_fifteen_minutes_by_default():
    settings = load_settings("gateway", environ={"CRM_JWT_SECRET": "s" * 40})
    assert settings.jwt_ttl_seconds == 900
    claims = jwt.decode(
        issue_token(settings, ADA),
        purpose_key(settings.jwt_secret, ACCESS_TOKEN),
        algorithms=[ALGORITHM],
        issuer=ISSUER,
    )
    assert claims["exp"] - claims["iat"] <= 900


def test_the_memory_is_bounded_and_keeps_the_newest():
    tokens = VerifiedTokens(capacity=3)
    for number in range(5):
        tokens.put("secret", f"token{number}", ADA, int(time.time()) + 60)
    assert tokens.get("secret", "token0") is None
    assert tokens.get("secret", "token1") is None
    assert [tokens.get("secret", f"token{n}") for n in (2, 3, 4)] == [ADA, ADA, ADA]


def test_an_entry_past_its_expiry_is_dropped(monkeypatch):
    tokens = VerifiedTokens()
    tokens.put("secret", "token", ADA, int(time.time()) + 60)
    later = time.time() + 60
    monkeypatch.setattr(time, "time", lambda: later)
    assert tokens.get("secret", "token") is None
    monkeypatch.undo()
    assert tokens.get("secret", "token") is None
