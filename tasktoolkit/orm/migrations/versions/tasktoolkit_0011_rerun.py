"""Re-runs, one answer per operation, and the lists' new filters.

Revision ID: tasktoolkit_0011_rerun
Revises: tasktoolkit_0010_workers
Create Date: 2026-12-06 15:30:00

- Operations get ``retry_of`` (the operation a re-run re-ran, indexed), and
  ``error_task_id`` / ``error_task_name``: the task whose failure is the
  operation's ``error``, kept when that task is re-run or gone.
- ``tasktoolkit_operation_resources``: every resource an operation touched,
  owned by the operation (``ON DELETE CASCADE``), indexed by resource so that
  ``/operations?resource_id=`` finds a bulk operation from any of them. The
  operations already there get the resources of their tasks still kept.
- Indexes for ``global_request_id``, ``user_id``, ``error_code`` (operations)
  and ``user_id``, ``error_code``, ``queue`` (tasks), newest first.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tasktoolkit.orm.migrations._columns import exact_string

revision: str = "tasktoolkit_0011_rerun"
down_revision: str | None = "tasktoolkit_0010_workers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPERATIONS = "tasktoolkit_operations"
_TASKS = "tasktoolkit_tasks"
_RESOURCES = "tasktoolkit_operation_resources"
#: (table, index, columns) of the lists' new filters.
_INDEXES = (
    (_OPERATIONS, "ix_tasktoolkit_operations_retry_of", ["retry_of"]),
    (
        _OPERATIONS,
        "ix_tasktoolkit_operations_global_request",
        ["global_request_id", "created_at", "id"],
    ),
    (_OPERATIONS, "ix_tasktoolkit_operations_user", ["user_id", "created_at", "id"]),
    (_OPERATIONS, "ix_tasktoolkit_operations_error_code", ["error_code", "created_at", "id"]),
    (_TASKS, "ix_tasktoolkit_tasks_user", ["user_id", "created_at", "id"]),
    (_TASKS, "ix_tasktoolkit_tasks_error_code", ["error_code", "created_at", "id"]),
    (_TASKS, "ix_tasktoolkit_tasks_queue_listed", ["queue", "created_at", "id"]),
)


def upgrade() -> None:
    with op.batch_alter_table(_OPERATIONS) as batch:
        batch.add_column(sa.Column("error_task_id", exact_string(36), nullable=True))
        batch.add_column(sa.Column("error_task_name", exact_string(128), nullable=True))
        batch.add_column(sa.Column("retry_of", exact_string(40), nullable=True))
    op.create_table(
        _RESOURCES,
        sa.Column("operation_id", exact_string(40), nullable=False),
        sa.Column("resource_type", exact_string(64), nullable=False),
        sa.Column("resource_id", exact_string(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["operation_id"],
            [f"{_OPERATIONS}.id"],
            name="fk_tasktoolkit_operation_resources_operation",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "operation_id", "resource_type", "resource_id", name=op.f(f"pk_{_RESOURCES}")
        ),
    )
    op.create_index(
        "ix_tasktoolkit_operation_resources_resource",
        _RESOURCES,
        ["resource_id", "resource_type"],
    )
    op.execute(
        f"INSERT INTO {_RESOURCES} (operation_id, resource_type, resource_id)"
        f" SELECT DISTINCT t.request_id, t.resource_type, t.resource_id FROM {_TASKS} t"
        f" JOIN {_OPERATIONS} o ON o.id = t.request_id"
    )
    for table, name, columns in _INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for table, name, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_index("ix_tasktoolkit_operation_resources_resource", table_name=_RESOURCES)
    op.drop_table(_RESOURCES)
    with op.batch_alter_table(_OPERATIONS) as batch:
        batch.drop_column("retry_of")
        batch.drop_column("error_task_name")
        batch.drop_column("error_task_id")
