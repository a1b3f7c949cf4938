"""What the consent tests share: contacts in the replica, lists, rows, ledger lines, events."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from services.marketing.models import (
    ConsentRecord,
    Contact,
    Subscription,
    SubscriptionList,
    Suppression,
)
from shared.db import Database
from shared.testing import outbox_events

PROBLEM = "application/problem+json"
LISTS = "/api/v1/subscription-lists"
SUBSCRIPTIONS = "/api/v1/subscriptions"
SUPPRESSIONS = "/api/v1/suppressions"
RECORDS = "/api/v1/subscriptions/ledger"


def add_contact(db: Database, email: str | None = "Ada@Example.com", **fields: Any) -> str:
    """A contact in the replica, as the contact.* events would have made it."""
    contact_id = fields.pop("id", None) or str(uuid.uuid4())
    fields.setdefault("first_name", "Ada")
    with db.session() as session:
        session.add(
            Contact(
                id=contact_id,
                email=email,
                email_key=email.strip().lower() if email else None,
                **fields,
            )
        )
    return contact_id


def add_list(db: Database, name: str = "Product news", double_opt_in: bool = False) -> str:
    list_id = str(uuid.uuid4())
    with db.session() as session:
        session.add(SubscriptionList(id=list_id, name=name, double_opt_in=double_opt_in))
    return list_id


def rows(db: Database, contact_id: str | None = None) -> list[Subscription]:
    statement = sa.select(Subscription).order_by(Subscription.created_at, Subscription.id)
    if contact_id is not None:
        statement = statement.where(Subscription.contact_id == contact_id)
    with db.session() as session:
        return list(session.scalars(statement))


def status_of(db: Database, contact_id: str, list_id: str) -> str | None:
    with db.session() as session:
        return session.scalar(
            sa.select(Subscription.status).where(
                Subscription.contact_id == contact_id, Subscription.list_id == list_id
            )
        )


def ledger(db: Database) -> list[ConsentRecord]:
    with db.session() as session:
        return list(session.scalars(sa.select(ConsentRecord).order_by(ConsentRecord.occurred_at)))


def suppressions(db: Database) -> list[Suppression]:
    with db.session() as session:
        return list(session.scalars(sa.select(Suppression).order_by(Suppression.created_at)))


def changes(db: Database) -> list[dict[str, Any]]:
    """The data of every `subscription.changed` in the outbox, oldest first."""
    return [data for _, data in outbox_events(db, "subscription.changed")]


def mail_requests(db: Database) -> list[dict[str, Any]]:
    return [data for _, data in outbox_events(db, "email.requested")]


def subscribe(client: Any, contact_id: str, list_id: str | None = None, **fields: Any) -> Any:
    body = {"contact_id": contact_id, "status": "subscribed", **fields}
    if list_id is not None:
        body["list_id"] = list_id
    return client.post(SUBSCRIPTIONS, json=body)
