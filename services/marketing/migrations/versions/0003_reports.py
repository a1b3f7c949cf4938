"""reports: lifecycle stage history, breached tickets, recipient moment indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 02:45:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MOMENTS = ("sent_at", "opened_at", "clicked_at", "bounced_at", "unsubscribed_at")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "contact_stages",
        sa.Column("contact_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "version"),
    )
    with op.batch_alter_table("contact_stages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_contact_stages_stage_occurred", ["stage", "occurred_at"], unique=False
        )
    # History starts now: each live replica row's stage is known to hold since the replica
    # applied it (its updated_at), the best a history learnt late can say.
    op.execute(
        "INSERT INTO contact_stages (contact_id, version, stage, occurred_at) "
        "SELECT id, version, lifecycle_stage, updated_at FROM contacts "
        "WHERE version > 0 AND lifecycle_stage IS NOT NULL "
        "AND erased = false AND merged_into IS NULL"
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tickets_breached", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("campaign_recipients", schema=None) as batch_op:
        for moment in MOMENTS:
            batch_op.create_index(
                f"ix_campaign_recipients_{moment}",
                [moment],
                unique=False,
                postgresql_where=sa.text(f"{moment} IS NOT NULL"),
                sqlite_where=sa.text(f"{moment} IS NOT NULL"),
            )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("campaign_recipients", schema=None) as batch_op:
        for moment in reversed(MOMENTS):
            batch_op.drop_index(f"ix_campaign_recipients_{moment}")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_column("tickets_breached")
    with op.batch_alter_table("contact_stages", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_stages_stage_occurred")
    op.drop_table("contact_stages")
