"""One signing key per purpose, derived from the one secret (`CRM_JWT_SECRET`).

A token made for one purpose never verifies as another: a click-tracking token is no
access token, an unsubscribe link is no CSAT link. Each key is HMAC-SHA256 of a label
under the secret (the "expand" step of HKDF with a single block, RFC 5869), so one
secret is all an operator keeps and rotating it rotates every key.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

# The purposes; a new kind of signed token adds one here and never reuses another's.
ACCESS_TOKEN = "access-token"  # bearer tokens the gateway issues to clients
SERVICE_CALL = "service-call"  # the short-lived tokens the gateway forwards to services
TRACKING_LINK = "tracking-link"  # open pixel and click redirect
CSAT_LINK = "csat-link"  # the rating links in a resolved ticket's email
UNSUBSCRIBE_LINK = "unsubscribe-link"  # one-click unsubscribe
OPT_IN_LINK = "opt-in-link"  # double opt-in confirmation
CLIENT_ADDRESS = "client-address"  # pseudonymous keys of client addresses (rate limits)

PURPOSES = frozenset(
    {
        ACCESS_TOKEN,
        SERVICE_CALL,
        TRACKING_LINK,
        CSAT_LINK,
        UNSUBSCRIBE_LINK,
        OPT_IN_LINK,
        CLIENT_ADDRESS,
    }
)


@lru_cache(maxsize=64)
def purpose_key(secret: str, purpose: str) -> bytes:
    """The 32-byte key for `purpose` under `secret` (ValueError for an unknown purpose)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown key purpose {purpose!r}")
    info = f"crm/{purpose}/v1".encode()
    return hmac.new(secret.encode(), info + b"\x01", hashlib.sha256).digest()
