"""Task results, the operation filters' indexes, and idempotency keys.

Revision ID: tasktoolkit_0003
Revises: tasktoolkit_0002
Create Date: 2026-12-02 10:00:00

- ``tasktoolkit_tasks.result``: the JSON object a worker reports with its
  success, kept as text on every backend;
- one index per filter of ``/operations`` (action, method and state within a
  project; one resource), so each list seeks and reads in order;
- ``tasktoolkit_idempotency_keys``: one row per ``(project, Idempotency-Key)``,
  owned by its operation (``ON DELETE CASCADE``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from tasktoolkit.orm.migrations._columns import exact_string, utc_datetime

revision: str = "tasktoolkit_0003"
down_revision: str | None = "tasktoolkit_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEYS = "tasktoolkit_idempotency_keys"
_OPERATION_INDEXES = {
    "project_action": ["project_id", "action", "created_at", "id"],
    "project_method": ["project_id", "method", "created_at", "id"],
    "project_state": ["project_id", "state", "created_at", "id"],
    "resource": ["resource_type", "resource_id", "created_at", "id"],
}


def upgrade() -> None:
    op.add_column("tasktoolkit_tasks", sa.Column("result", sa.Text(), nullable=True))
    for name, columns in _OPERATION_INDEXES.items():
        op.create_index(
            op.f(f"ix_tasktoolkit_operations_{name}"), "tasktoolkit_operations", columns
        )
    op.create_table(
        _KEYS,
        sa.Column("project_id", exact_string(64), nullable=False),
        sa.Column("key", exact_string(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("operation_id", exact_string(40), nullable=False),
        sa.Column("created_at", utc_datetime(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=True),
        sa.Column(
            "body",
            sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["operation_id"],
            ["tasktoolkit_operations.id"],
            name=op.f(f"fk_{_KEYS}_operation"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "key", name=op.f(f"pk_{_KEYS}")),
    )
    op.create_index(op.f(f"ix_{_KEYS}_operation_id"), _KEYS, ["operation_id"])


def downgrade() -> None:
    op.drop_table(_KEYS)
    for name in _OPERATION_INDEXES:
        op.drop_index(op.f(f"ix_tasktoolkit_operations_{name}"), "tasktoolkit_operations")
    op.drop_column("tasktoolkit_tasks", "result")
