"""Signed public links: one-click unsubscribe, and the confirmation of a double opt-in.

Both carry a token instead of a login, signed by itsdangerous with a key of its own
derived from the secret (`shared.keys`: UNSUBSCRIBE_LINK, OPT_IN_LINK), so a token of one
kind, or a CSAT, tracking or access token, never verifies as the other:

- unsubscribe, `{public_url}/api/v1/unsubscribe/{token}`: `URLSafeSerializer`, salt
  "crm.unsubscribe", payload `[contact_id, email_key, list_id or "*"]` ("*": every list).
  It never expires: a mail's unsubscribe link must keep working for as long as the mail
  is read. It names its contact, so it can only ever unsubscribe that contact.
- confirmation, `{public_url}/api/v1/subscriptions/confirm/{token}`:
  `URLSafeTimedSerializer`, salt "crm.subscription.confirm", payload
  `[subscription_id, nonce, email_key]`, good for `CONFIRM_LINK_DAYS` days (settings.extra
  "confirm_link_days" overrides). The nonce is the subscription's latest: mailing a new
  link voids the older ones.

A token that is malformed, tampered with, expired or not ours reads as None.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadData, Serializer, Signer, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, want_bytes

from shared.config import Settings
from shared.events import canonical_uuid
from shared.keys import OPT_IN_LINK, UNSUBSCRIBE_LINK, purpose_key

UNSUBSCRIBE_SALT = "crm.unsubscribe"
CONFIRM_SALT = "crm.subscription.confirm"
EVERY_LIST = "*"
CONFIRM_LINK_DAYS = 7
MAX_TOKEN_CHARS = 1024
MAX_EMAIL_CHARS = 254


@dataclass(frozen=True)
class UnsubscribeClaim:
    """What an unsubscribe token signs: whose address, and which list (None: every list)."""

    contact_id: str
    email_key: str
    list_id: str | None


@dataclass(frozen=True)
class ConfirmationClaim:
    """What a confirmation token signs: the subscription, its nonce, the address mailed."""

    subscription_id: str
    nonce: str
    email_key: str


def _public_url(settings: Settings) -> str:
    return str(settings.extra["public_url"]).rstrip("/")


def _unsubscribe_serializer(settings: Settings) -> URLSafeSerializer:
    return _serializer_for(purpose_key(settings.jwt_secret, UNSUBSCRIBE_LINK))


class _OnceDerivedSigner(Signer):
    """A signer that derives its key from the secret once, not on every signature."""

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        if secret_key is not None:
            return super().derive_key(secret_key)
        if "_key" not in self.__dict__:
            self.__dict__["_key"] = super().derive_key()
        return self.__dict__["_key"]


class _UncompressedSerializer(URLSafeSerializer):
    """Signs without trying zlib first and with one signer (these short payloads gain a few
    bytes from zlib, and a 50,000-recipient campaign signs 50,000 links). Its tokens are
    read by the plain URLSafeSerializer, which takes compressed and uncompressed alike."""

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        if salt is not None and want_bytes(salt) != self.salt:
            return super().make_signer(salt)
        if "_signer" not in self.__dict__:
            self.__dict__["_signer"] = _OnceDerivedSigner(self.secret_keys, salt=self.salt)
        return self.__dict__["_signer"]


@functools.lru_cache(maxsize=4)
def _serializer_for(key: bytes) -> URLSafeSerializer:
    """One serializer per key (a campaign signs 50,000 links with it)."""
    return _UncompressedSerializer(key, salt=UNSUBSCRIBE_SALT)


def _confirm_serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(purpose_key(settings.jwt_secret, OPT_IN_LINK), salt=CONFIRM_SALT)


def _email_key(value: Any) -> str | None:
    if isinstance(value, str) and "@" in value and len(value) <= MAX_EMAIL_CHARS:
        return value.strip().lower()
    return None


def unsubscribe_token(
    settings: Settings, contact_id: str, email: str, list_id: str | None = None
) -> str:
    """The signed token unsubscribing a contact's address from a list (None: every list)."""
    payload = [str(contact_id), email.strip().lower(), str(list_id) if list_id else EVERY_LIST]
    return _unsubscribe_serializer(settings).dumps(payload)


def unsubscribe_url(
    settings: Settings, contact_id: str, email: str, list_id: str | None = None
) -> str:
    """The public one-click unsubscribe link a campaign puts in its mail (and in
    `List-Unsubscribe`, with `List-Unsubscribe-Post: List-Unsubscribe=One-Click`)."""
    token = unsubscribe_token(settings, contact_id, email, list_id)
    return f"{_public_url(settings)}/api/v1/unsubscribe/{token}"


def read_unsubscribe_token(settings: Settings, token: str) -> UnsubscribeClaim | None:
    """The claim an unsubscribe token signs; None when it is not a token we signed."""
    if len(token) > MAX_TOKEN_CHARS:
        return None
    try:
        value = _unsubscribe_serializer(settings).loads(token)
    except BadData:
        return None
    if not (isinstance(value, list) and len(value) == 3):
        return None
    contact_id, email_key = canonical_uuid(value[0]), _email_key(value[1])
    list_id = None if value[2] == EVERY_LIST else canonical_uuid(value[2])
    if contact_id is None or email_key is None or (list_id is None and value[2] != EVERY_LIST):
        return None
    return UnsubscribeClaim(contact_id, email_key, list_id)


def confirm_token(settings: Settings, subscription_id: str, nonce: str, email: str) -> str:
    """The signed, time-stamped token confirming a pending subscription."""
    payload = [str(subscription_id), nonce, email.strip().lower()]
    return _confirm_serializer(settings).dumps(payload)


def confirm_url(settings: Settings, subscription_id: str, nonce: str, email: str) -> str:
    """The public link that confirms a double opt-in subscription."""
    token = confirm_token(settings, subscription_id, nonce, email)
    return f"{_public_url(settings)}/api/v1/subscriptions/confirm/{token}"


def _confirm_seconds(settings: Settings) -> int:
    return int(float(settings.extra.get("confirm_link_days", CONFIRM_LINK_DAYS)) * 86400)


def read_confirm_token(settings: Settings, token: str) -> ConfirmationClaim | None:
    """The claim a confirmation token signs; None when not ours, tampered or expired."""
    if len(token) > MAX_TOKEN_CHARS:
        return None
    try:
        value = _confirm_serializer(settings).loads(token, max_age=_confirm_seconds(settings))
    except BadData:
        return None
    if not (isinstance(value, list) and len(value) == 3):
        return None
    subscription_id, nonce, email_key = (
        canonical_uuid(value[0]),
        canonical_uuid(value[1]),
        _email_key(value[2]),
    )
    if subscription_id is None or nonce is None or email_key is None:
        return None
    return ConfirmationClaim(subscription_id, nonce, email_key)
