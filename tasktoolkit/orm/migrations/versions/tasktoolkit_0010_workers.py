"""Live workers, and the indexes of the stats.

Revision ID: tasktoolkit_0010_workers
Revises: tasktoolkit_0009_reaper_watch
Create Date: 2026-12-06 15:10:00

Each worker announces itself in ``tasktoolkit_workers`` (one row, beaten while
it runs, on the database's clock). The stats read the last hour's failed tasks
(``ix_tasktoolkit_tasks_finished``) and ended attempts
(``ix_tasktoolkit_task_attempts_finished``) by their finish times.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tasktoolkit.orm.migrations._columns import exact_string, utc_datetime

revision: str = "tasktoolkit_0010_workers"
down_revision: str | None = "tasktoolkit_0009_reaper_watch"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tasktoolkit_workers",
        sa.Column("id", exact_string(255), nullable=False),
        sa.Column("host", exact_string(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("names", sa.Text(), nullable=False),
        sa.Column("queues", sa.Text(), nullable=False),
        sa.Column("timeout", sa.Integer(), nullable=False),
        sa.Column("started_at", utc_datetime(), nullable=False),
        sa.Column("beat_at", utc_datetime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasktoolkit_workers")),
    )
    op.create_index("ix_tasktoolkit_tasks_finished", "tasktoolkit_tasks", ["state", "finished_at"])
    op.create_index(
        "ix_tasktoolkit_task_attempts_finished", "tasktoolkit_task_attempts", ["finished_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_tasktoolkit_task_attempts_finished", table_name="tasktoolkit_task_attempts")
    op.drop_index("ix_tasktoolkit_tasks_finished", table_name="tasktoolkit_tasks")
    op.drop_table("tasktoolkit_workers")
