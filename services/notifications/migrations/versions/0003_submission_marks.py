"""submission marks: when a message's SMTP conversation began, when the server took it

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 05:50:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("smtp_started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True))
    # A message left `sending` by a sender without marks may have reached the server:
    # marked as begun, reconciliation keeps it in doubt (never resent), as before.
    op.execute("UPDATE messages SET smtp_started_at = sending_started_at WHERE status = 'sending'")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("submitted_at")
        batch.drop_column("smtp_started_at")
