"""Queues: a task's route, and whether a queue bridge has published it.

Revision ID: tasktoolkit_0005
Revises: tasktoolkit_0004
Create Date: 2026-12-03 09:00:00

Tasks get a ``queue`` (where a Celery bridge publishes them, and which
database workers claim them; ``None`` is the default queue) and a
``published_at`` (when a queue bridge last published them; the sweeper
publishes again those still pending and never published). Two indexes serve
the claims by queue and the sweeper.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tasktoolkit.orm.migrations._columns import exact_string, utc_datetime

revision: str = "tasktoolkit_0005"
down_revision: str | None = "tasktoolkit_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasktoolkit_tasks", sa.Column("queue", exact_string(255), nullable=True))
    op.add_column("tasktoolkit_tasks", sa.Column("published_at", utc_datetime(), nullable=True))
    op.create_index(
        op.f("ix_tasktoolkit_tasks_queue"),
        "tasktoolkit_tasks",
        ["state", "queue", "created_at", "id"],
    )
    op.create_index(
        op.f("ix_tasktoolkit_tasks_unpublished"),
        "tasktoolkit_tasks",
        ["state", "published_at", "created_at"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_tasktoolkit_tasks_unpublished"), table_name="tasktoolkit_tasks")
    op.drop_index(op.f("ix_tasktoolkit_tasks_queue"), table_name="tasktoolkit_tasks")
    with op.batch_alter_table("tasktoolkit_tasks") as batch:
        batch.drop_column("published_at")
        batch.drop_column("queue")
