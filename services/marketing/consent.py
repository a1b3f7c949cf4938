"""Consent: subscriptions, their ledger, suppressions (to be written)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared.bus import Handler
from shared.config import Settings


def forget_contact(session: Session, contact_id: str, email: str | None) -> None:
    """Right to be forgotten: drop the person's consent data, keep the address suppressed."""


def handlers(settings: Settings) -> dict[str, Handler]:
    return {}
