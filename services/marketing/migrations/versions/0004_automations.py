"""automations: rules, their runs, the shipped (disabled) rules, the open-deals fact

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 03:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.marketing.automation_defaults import install_default_rules

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEDULED = sa.text("status = 'scheduled'")


def upgrade() -> None:
    """Upgrade schema."""
    rules = op.create_table(
        "automation_rules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=True),
        sa.Column("inactive_days", sa.Integer(), nullable=True),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("delay_seconds", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("automation_rules", schema=None) as batch_op:
        batch_op.create_index("ix_automation_rules_created_id", ["created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_automation_rules_type_enabled", ["event_type", "enabled"], unique=False
        )

    op.create_table(
        "automation_runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("rule_id", sa.String(length=36), nullable=False),
        sa.Column("trigger_key", sa.String(length=120), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actions_done", sa.JSON(), nullable=False),
        sa.Column("inactive_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["rule_id"], ["automation_rules.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("automation_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_automation_runs_contact_id"), ["contact_id"], unique=False
        )
        batch_op.create_index(
            "ix_automation_runs_rule_created", ["rule_id", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_automation_runs_scheduled",
            ["due_at"],
            unique=False,
            postgresql_where=SCHEDULED,
            sqlite_where=SCHEDULED,
        )
        batch_op.create_index(
            "uq_automation_runs_rule_trigger", ["rule_id", "trigger_key"], unique=True
        )

    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("deals_open", sa.Integer(), nullable=False, server_default="0")
        )
    # The shipped rules, disabled; only here and with the table, so a deleted one stays gone.
    install_default_rules(op.get_bind(), rules)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_column("deals_open")
    with op.batch_alter_table("automation_runs", schema=None) as batch_op:
        batch_op.drop_index("uq_automation_runs_rule_trigger")
        batch_op.drop_index(
            "ix_automation_runs_scheduled",
            postgresql_where=SCHEDULED,
            sqlite_where=SCHEDULED,
        )
        batch_op.drop_index("ix_automation_runs_rule_created")
        batch_op.drop_index(batch_op.f("ix_automation_runs_contact_id"))
    op.drop_table("automation_runs")
    with op.batch_alter_table("automation_rules", schema=None) as batch_op:
        batch_op.drop_index("ix_automation_rules_type_enabled")
        batch_op.drop_index("ix_automation_rules_created_id")
    op.drop_table("automation_rules")
