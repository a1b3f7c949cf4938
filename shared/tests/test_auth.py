"""Token verification: a verified token is remembered until it expires, and no longer."""

from __future__ import annotations

import time

import jwt
import pytest

from shared.auth import ALGORITHM, Principal, VerifiedTokens, issue_token, verify_token
from shared.config import load_settings
from shared.web import ApiError

SETTINGS = load_settings("contacts").with_overrides(jwt_secret="s" * 40)
ADA = Principal("7d4c8a52-3c1a-4d8e-9b1e-0e3b7f1f5a10", "sales", "ada@example.com")


def test_a_verified_token_is_not_decoded_again(monkeypatch):
    token = issue_token(SETTINGS, ADA)
    assert verify_token(SETTINGS, token) == ADA
    calls = []
    monkeypatch.setattr(jwt, "decode", lambda *args, **kwargs: calls.append(args))
    assert verify_token(SETTINGS, token) == ADA
    assert calls == []


def test_a_remembered_token_is_checked_again_once_it_expires(monkeypatch):
    token = issue_token(SETTINGS, ADA, ttl_seconds=60)
    assert verify_token(SETTINGS, token) == ADA
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)

    def expired(*_args, **_kwargs):  # PyJWT reads its own clock: say what it would say
        raise jwt.ExpiredSignatureError("Signature has expired")

    monkeypatch.setattr(jwt, "decode", expired)
    with pytest.raises(ApiError) as refused:
        verify_token(SETTINGS, token)
    assert refused.value.status == 401
    assert "expired" in refused.value.detail


def test_a_token_verified_under_one_secret_is_not_taken_under_another():
    token = issue_token(SETTINGS, ADA)
    assert verify_token(SETTINGS, token) == ADA
    with pytest.raises(ApiError) as refused:
        verify_token(SETTINGS.with_overrides(jwt_secret="t" * 40), token)
    assert refused.value.status == 401


def test_a_refused_token_is_not_remembered():
    forged = jwt.encode({"sub": ADA.subject, "role": "admin"}, "x" * 40, ALGORITHM)
    for _ in range(2):
        with pytest.raises(ApiError):
            verify_token(SETTINGS, forged)


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
