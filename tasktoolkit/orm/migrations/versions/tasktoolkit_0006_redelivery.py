"""Redelivery: a published task that does not start is published again.

Revision ID: tasktoolkit_0006
Revises: tasktoolkit_0005
Create Date: 2026-12-05 09:00:00

Tasks get a ``redeliver_after`` (seconds): a queue bridge's sweeper publishes
again a task it published that is still pending that long after (the broker
lost the message, or a dead worker holds it). Tasks already there get their
rules' default, three heartbeat timeouts.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "tasktoolkit_0006"
down_revision: str | None = "tasktoolkit_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tasktoolkit_tasks",
        sa.Column("redeliver_after", sa.Integer(), server_default=sa.text("900"), nullable=False),
    )
    op.execute(
        "UPDATE tasktoolkit_tasks SET redeliver_after = 3 * heartbeat_timeout"
        " WHERE state = 'pending'"
    )


def downgrade() -> None:
    with op.batch_alter_table("tasktoolkit_tasks") as batch:
        batch.drop_column("redeliver_after")
