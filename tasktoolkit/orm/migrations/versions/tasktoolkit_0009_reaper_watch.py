"""The reapers' watch: since when they have seen the database without a gap.

Revision ID: tasktoolkit_0009_reaper_watch
Revises: tasktoolkit_0008_notifications
Create Date: 2026-12-06 12:00:00

A worker is called lost only once the reapers, like the worker's silence,
have lasted its heartbeat timeout: time the database spent out of every
reaper's sight (an outage, which no worker could heartbeat through) does not
count against a worker. Each reaper pass writes the one row.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tasktoolkit.orm.migrations._columns import exact_string, utc_datetime

revision: str = "tasktoolkit_0009_reaper_watch"
down_revision: str | None = "tasktoolkit_0008_notifications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tasktoolkit_reaper_watch",
        sa.Column("name", exact_string(64), nullable=False),
        sa.Column("since", utc_datetime(), nullable=False),
        sa.Column("seen_at", utc_datetime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_tasktoolkit_reaper_watch")),
    )


def downgrade() -> None:
    op.drop_table("tasktoolkit_reaper_watch")
