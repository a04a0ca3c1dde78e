"""Notifications: when the end of an operation was handed to the broker.

Revision ID: tasktoolkit_0008_notifications
Revises: tasktoolkit_0007_observability
Create Date: 2026-12-06 13:30:00

Operations get ``notified_at`` (``None`` until the notification of their end
is sent) and an index on ``(notified_at, finished_at)`` for the sweep that
sends what was finished and never sent. Operations already there count as
notified: a sweep that starts now does not announce the past.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tasktoolkit.orm.migrations._columns import utc_datetime

revision: str = "tasktoolkit_0008_notifications"
down_revision: str | None = "tasktoolkit_0007_observability"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasktoolkit_operations", sa.Column("notified_at", utc_datetime(), nullable=True))
    op.execute(
        "UPDATE tasktoolkit_operations SET notified_at = finished_at"
        " WHERE finished_at IS NOT NULL"
    )
    op.create_index(
        "ix_tasktoolkit_operations_to_notify",
        "tasktoolkit_operations",
        ["notified_at", "finished_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_tasktoolkit_operations_to_notify", table_name="tasktoolkit_operations")
    with op.batch_alter_table("tasktoolkit_operations") as batch:
        batch.drop_column("notified_at")
