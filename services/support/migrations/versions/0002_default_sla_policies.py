"""default SLA policies: one per priority, so a new system's tickets have deadlines

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 21:50:00

Round-the-clock targets as helpdesks ship them (first response / resolution): urgent 1 h /
4 h, high 4 h / 24 h, normal 8 h / 48 h, low 24 h / 120 h. Only priorities without a policy
get one: a policy an operator made is never touched. They are ordinary policies afterwards
(edit or delete them through /api/v1/sla-policies); a downgrade leaves them in place, as it
cannot tell them from edited ones. No `sla_policy.created` event: nothing held a ticket yet.
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HOUR = 60  # minutes
# priority: (name, first response minutes, resolution minutes)
DEFAULTS = {
    "urgent": ("Urgent", 1 * HOUR, 4 * HOUR),
    "high": ("High", 4 * HOUR, 24 * HOUR),
    "normal": ("Normal", 8 * HOUR, 48 * HOUR),
    "low": ("Low", 24 * HOUR, 120 * HOUR),
}

# The table as this revision knows it (never the models: they move on).
policies = sa.table(
    "sla_policies",
    sa.column("id", sa.String),
    sa.column("name", sa.String),
    sa.column("priority", sa.String),
    sa.column("first_response_minutes", sa.Integer),
    sa.column("resolution_minutes", sa.Integer),
    sa.column("calendar", sa.JSON),
    sa.column("version", sa.Integer),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    """A default policy for each priority that has none."""
    taken = set(op.get_bind().scalars(sa.select(policies.c.priority)))
    now = datetime.now(UTC)
    rows = [
        {
            "id": str(uuid.uuid4()),
            "name": f"{name} (default)",
            "priority": priority,
            "first_response_minutes": first_response,
            "resolution_minutes": resolution,
            "calendar": None,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for priority, (name, first_response, resolution) in DEFAULTS.items()
        if priority not in taken
    ]
    if rows:
        op.bulk_insert(policies, rows)


def downgrade() -> None:
    """Nothing: the policies may have been edited since, and are the operator's now."""
