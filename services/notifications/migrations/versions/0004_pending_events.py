"""pending events: events that wait for another aggregate's data (a contact's address)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 22:10:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "pending_events",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("waits_for", sa.String(length=20), nullable=False),
        sa.Column("key", sa.String(length=36), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("pending_events", schema=None) as batch_op:
        batch_op.create_index("ix_pending_events_waits_for_key", ["waits_for", "key"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_pending_events_created_at"), ["created_at"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("pending_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_events_created_at"))
        batch_op.drop_index("ix_pending_events_waits_for_key")
    op.drop_table("pending_events")
