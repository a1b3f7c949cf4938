"""The inbox: ids of events a service has applied, committed with their effects."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, MetaData, String, Table


def define_inbox_table(metadata: MetaData) -> Table:
    if "inbox" in metadata.tables:
        return metadata.tables["inbox"]
    return Table(
        "inbox",
        metadata,
        Column("event_id", String(64), primary_key=True),
        Column("event_type", String(128), nullable=False),
        Column("handled_at", DateTime(timezone=True), nullable=False),
    )
