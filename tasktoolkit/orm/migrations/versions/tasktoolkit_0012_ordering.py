"""Ordering and exclusivity: tasks that run after others, and exclusive task names.

Revision ID: tasktoolkit_0012_ordering
Revises: tasktoolkit_0011_rerun
Create Date: 2026-12-06 16:00:00

A task records the names of the tasks of its spawn it runs ``after``, how many
of them have not succeeded yet (``waiting_on``: claimable at 0), whether some
task runs after it (``awaited``), and whether its name is ``exclusive`` on its
resource. The claims' index carries ``waiting_on`` after the queue, so a claim
seeks the ready tasks however many wait on prerequisites.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "tasktoolkit_0012_ordering"
down_revision: str | None = "tasktoolkit_0011_rerun"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_QUEUE = ("state", "queue", "created_at", "id", "name", "not_before")


def _queue_index(columns: Sequence[str]) -> None:
    """``ix_tasktoolkit_tasks_queue`` again, on ``columns``."""
    op.drop_index(op.f("ix_tasktoolkit_tasks_queue"), table_name="tasktoolkit_tasks")
    op.create_index(op.f("ix_tasktoolkit_tasks_queue"), "tasktoolkit_tasks", list(columns))


def upgrade() -> None:
    op.add_column("tasktoolkit_tasks", sa.Column("after", sa.String(1024), nullable=True))
    op.add_column(
        "tasktoolkit_tasks",
        sa.Column("waiting_on", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "tasktoolkit_tasks",
        sa.Column("awaited", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "tasktoolkit_tasks",
        sa.Column("exclusive", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    _queue_index(("state", "queue", "waiting_on", *_QUEUE[2:]))


def downgrade() -> None:
    _queue_index(_QUEUE)
    with op.batch_alter_table("tasktoolkit_tasks") as batch:
        batch.drop_column("exclusive")
        batch.drop_column("awaited")
        batch.drop_column("waiting_on")
        batch.drop_column("after")
