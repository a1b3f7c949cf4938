"""The transactional outbox: events written with the change they describe, relayed later."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from shared.events import Envelope, utcnow
from shared.logs import correlation_id


def define_outbox_table(metadata: MetaData) -> Table:
    if "outbox" in metadata.tables:
        return metadata.tables["outbox"]
    table = Table(
        "outbox",
        metadata,
        Column(
            "position",
            BigInteger().with_variant(Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("event_type", String(128), nullable=False),
        Column("aggregate_id", String(64), nullable=False, index=True),
        Column("payload", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("claim_token", String(36), nullable=True),
        Column("claimed_until", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("sent_at", DateTime(timezone=True), nullable=True),
    )
    Index(
        "ix_outbox_unsent",
        table.c.position,
        postgresql_where=table.c.sent_at.is_(None),
        sqlite_where=table.c.sent_at.is_(None),
    )
    return table


def _outbox(session: Session) -> Table:
    return session.info["db"].outbox


def outbox_row(
    service: str,
    event_type: str,
    aggregate_id: str,
    data: dict[str, Any],
    *,
    aggregate_version: int | None = None,
) -> dict[str, Any]:
    """The outbox row of a new event (its envelope as JSON), ready to insert."""
    envelope = Envelope(
        type=event_type,
        source=service,
        aggregate_id=str(aggregate_id),
        aggregate_version=aggregate_version,
        data=data,
        correlation_id=correlation_id.get(),
    )
    return {
        "event_id": envelope.id,
        "event_type": envelope.type,
        "aggregate_id": envelope.aggregate_id,
        "payload": envelope.to_json(),
        "created_at": envelope.occurred_at,
        "attempts": 0,
    }


def record_event(
    session: Session,
    event_type: str,
    aggregate_id: str,
    data: dict[str, Any],
    *,
    aggregate_version: int | None = None,
) -> str:
    """Write an event into the outbox inside the caller's transaction; its id."""
    db = session.info["db"]
    row = outbox_row(
        db.service, event_type, aggregate_id, data, aggregate_version=aggregate_version
    )
    session.execute(db.outbox.insert().values(**row))
    return row["event_id"]


def record_events(session: Session, rows: list[dict[str, Any]]) -> None:
    """Write many events made by outbox_row in one statement (bulk imports)."""
    if rows:
        session.execute(session.info["db"].outbox.insert(), rows)


def claim_batch(session: Session, limit: int, lease_seconds: float = 60.0) -> list[Any]:
    """Claim up to `limit` unsent rows for this relay, oldest first.

    The candidates are read and locked first (SKIP LOCKED on PostgreSQL, so two relays
    never take the same rows; on SQLite the write lock serialises), then leased by
    position. An `UPDATE ... WHERE position IN (SELECT ... LIMIT n FOR UPDATE SKIP
    LOCKED)` would be simpler but PostgreSQL may re-run the subquery per row scanned and
    claim far more than `limit`. A claim expires after `lease_seconds`, so rows of a relay
    that died are taken again.
    """
    table = _outbox(session)
    now = utcnow()
    claimable = (table.c.sent_at.is_(None)) & (
        (table.c.claimed_until.is_(None)) | (table.c.claimed_until < now)
    )
    if session.scalar(select(table.c.position).where(claimable).limit(1)) is None:
        return []  # idle: no lock taken (SQLite has only one)
    from shared.db import take_write_lock  # shared.db builds on this module

    take_write_lock(session)
    rows = list(
        session.execute(
            select(table.c.position, table.c.event_type, table.c.payload)
            .where(claimable)
            .order_by(table.c.position)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if rows:
        session.execute(
            update(table)
            .where(table.c.position.in_([row.position for row in rows]))
            .values(
                claim_token=str(uuid.uuid4()),
                claimed_until=now + timedelta(seconds=lease_seconds),
                attempts=table.c.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
    return rows


def mark_sent(session: Session, positions: list[int]) -> None:
    """Mark rows the broker confirmed."""
    table = _outbox(session)
    if positions:
        session.execute(
            update(table)
            .where(table.c.position.in_(positions))
            .values(sent_at=utcnow(), claim_token=None, claimed_until=None)
        )


def release(session: Session, positions: list[int]) -> None:
    """Give rows back (the broker refused them or the connection went away)."""
    table = _outbox(session)
    if positions:
        session.execute(
            update(table)
            .where(table.c.position.in_(positions))
            .values(claim_token=None, claimed_until=None)
        )


def backlog(session: Session) -> tuple[int, float | None]:
    """How many events wait to be published, and the age in seconds of the oldest."""
    table = _outbox(session)
    count, oldest = session.execute(
        select(func.count(), func.min(table.c.created_at)).where(table.c.sent_at.is_(None))
    ).one()
    if oldest is None:
        return count, None
    if oldest.tzinfo is None:  # SQLite gives naive datetimes back
        oldest = oldest.replace(tzinfo=utcnow().tzinfo)
    return count, (utcnow() - oldest).total_seconds()


def purge_sent(session: Session, older_than_hours: float) -> int:
    """Delete sent rows past their retention (they hold copies of personal data)."""
    table = _outbox(session)
    cutoff = utcnow() - timedelta(hours=older_than_hours)
    result = session.execute(
        delete(table).where(table.c.sent_at.is_not(None)).where(table.c.sent_at < cutoff)
    )
    return result.rowcount or 0


def redact_aggregate(session: Session, aggregate_id: str, keep: dict[str, Any]) -> None:
    """Replace the data of every outbox row about one aggregate (right to be forgotten).

    Unsent rows are still published, with only `keep` as their data, so consumers learn
    the event happened without learning who it was about.
    """
    table = _outbox(session)
    rows = session.execute(
        select(table.c.position, table.c.payload).where(table.c.aggregate_id == aggregate_id)
    ).all()
    for position, payload in rows:
        body = json.loads(payload)
        body["data"] = {**keep, "redacted": True}
        session.execute(
            update(table).where(table.c.position == position).values(payload=json.dumps(body))
        )
