"""The tokens the gateway forwards to the services: one per caller, reused for a while.

A service accepts only these (shared.auth: SERVICE_CALL key, a minute), never a client's
access token; so a client can reach a service with nothing the gateway would refuse. Each
names the caller as the gateway's account check left it (current role and team). Signing
one per call would cost a JWT encode each time: one is minted per principal and reused
for REUSE_SECONDS, so a service always receives one with at least half its life left.
"""

from __future__ import annotations

import threading
import time

from shared.auth import SERVICE_TOKEN_TTL_SECONDS, Principal, issue_service_token
from shared.config import Settings

REUSE_SECONDS = SERVICE_TOKEN_TTL_SECONDS / 2
CAPACITY = 4096

_Key = tuple[str, str, str, str | None, str, bool]


class ServiceTokens:
    """Minted service-call tokens by principal (bounded; the oldest make room)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._tokens: dict[_Key, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def token_for(self, settings: Settings, principal: Principal) -> str:
        """A service-call token naming `principal`, minted at most REUSE_SECONDS ago."""
        key = (
            settings.jwt_secret,
            principal.subject,
            principal.role,
            principal.email,
            principal.kind,
            principal.team,
        )
        now = time.monotonic()
        with self._lock:
            cached = self._tokens.get(key)
        if cached is not None and now - cached[1] < REUSE_SECONDS:
            return cached[0]
        token = issue_service_token(settings, principal)
        with self._lock:
            while len(self._tokens) >= self.capacity:
                del self._tokens[next(iter(self._tokens))]
            self._tokens[key] = (token, now)
        return token


_MINTED = ServiceTokens()


def service_token(settings: Settings, principal: Principal) -> str:
    """The token to forward a call of `principal` with (see ServiceTokens)."""
    return _MINTED.token_for(settings, principal)
