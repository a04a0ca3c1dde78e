"""Observability: the trace context a task was spawned in, and an index a scrape reads alone.

Revision ID: tasktoolkit_0007_observability
Revises: tasktoolkit_0006
Create Date: 2026-12-10 09:00:00

Tasks get a ``trace_context`` (the W3C trace context of the request that
spawned them, for the worker that starts them to continue its trace; never
shown). The claims' index by queue carries the name and ``not_before`` too,
so that a metrics scrape reads the active tasks per name and queue, and the
oldest ready pending one, from it alone (its leading columns, which the
claims seek, stay as they were).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "tasktoolkit_0007_observability"
down_revision: str | None = "tasktoolkit_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasktoolkit_tasks", sa.Column("trace_context", sa.String(1024), nullable=True))
    _queue_index(["state", "queue", "created_at", "id", "name", "not_before"])


def downgrade() -> None:
    _queue_index(["state", "queue", "created_at", "id"])
    with op.batch_alter_table("tasktoolkit_tasks") as batch:
        batch.drop_column("trace_context")


def _queue_index(columns: list[str]) -> None:
    """``ix_tasktoolkit_tasks_queue`` again, on ``columns``."""
    op.drop_index(op.f("ix_tasktoolkit_tasks_queue"), table_name="tasktoolkit_tasks")
    op.create_index(op.f("ix_tasktoolkit_tasks_queue"), "tasktoolkit_tasks", columns)
