"""The toolkit's tables: operations and tasks.

Revision ID: tasktoolkit_0001
Revises:
Create Date: 2026-11-25 17:34:42

Times are written with their per-backend type spelled out here, not through
``UTCDateTime``, so that this revision stays what it is when the type changes:
``timestamptz`` on PostgreSQL, ``DATETIME(6)`` on MariaDB, ``DATETIME`` on SQLite.
Resource columns (``port_id`` ...) are added by the host's own revisions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tasktoolkit.orm.migrations._columns import utc_datetime

revision: str = "tasktoolkit_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("tasktoolkit",)
depends_on: str | Sequence[str] | None = None

TASK_STATES = "'pending', 'running', 'succeeded', 'failed', 'cancelled'"
OPERATION_STATES = "'running', 'succeeded', 'failed', 'cancelled'"


#: Each table's indexes: ``ix_<table>_<name>`` on these columns.
INDEXES = {
    "tasktoolkit_operations": {
        "created": ["created_at", "id"],
        "project": ["project_id", "created_at", "id"],
        "expires": ["expires_at"],
    },
    "tasktoolkit_tasks": {
        "resource": ["resource_type", "resource_id", "created_at", "id"],
        "state": ["state", "created_at", "id"],
        "request": ["request_id", "created_at"],
        "project": ["project_id", "created_at", "id"],
        "project_state": ["project_id", "state", "created_at", "id"],
        "expires": ["expires_at"],
    },
}


def upgrade() -> None:
    _create_operations()
    _create_tasks()
    for table, indexes in INDEXES.items():
        for name, columns in indexes.items():
            op.create_index(op.f(f"ix_{table}_{name}"), table, columns)


def _create_operations() -> None:
    op.create_table(
        "tasktoolkit_operations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("global_request_id", sa.String(40), nullable=True),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("path", sa.String(2048), nullable=False),
        sa.Column("action", sa.String(64), nullable=True),
        sa.Column("resource_type", sa.String(64), nullable=True),
        sa.Column("resource_id", sa.String(64), nullable=True),
        sa.Column("project_id", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("ttl_seconds", sa.Integer(), nullable=True),
        # tasks_pending, tasks_running, ...: the operation's task count per state
        *(
            sa.Column(f"tasks_{state}", sa.Integer(), server_default=sa.text("0"), nullable=False)
            for state in ("pending", "running", "succeeded", "failed", "cancelled")
        ),
        sa.Column("created_at", utc_datetime(), nullable=False),
        sa.Column("updated_at", utc_datetime(), nullable=False),
        sa.Column("finished_at", utc_datetime(), nullable=True),
        sa.Column("expires_at", utc_datetime(), nullable=True),
        sa.CheckConstraint(
            f"state IN ({OPERATION_STATES})", name=op.f("ck_tasktoolkit_operations_state")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasktoolkit_operations")),
    )


def _create_tasks() -> None:
    op.create_table(
        "tasktoolkit_tasks",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("request_id", sa.String(40), nullable=True),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_traceback", sa.Text(), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("project_id", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("heartbeat_timeout", sa.Integer(), server_default=sa.text("300"), nullable=False),
        sa.Column("heartbeat_at", utc_datetime(), nullable=True),
        sa.Column("created_at", utc_datetime(), nullable=False),
        sa.Column("started_at", utc_datetime(), nullable=True),
        sa.Column("updated_at", utc_datetime(), nullable=False),
        sa.Column("finished_at", utc_datetime(), nullable=True),
        sa.Column("expires_at", utc_datetime(), nullable=True),
        sa.CheckConstraint(f"state IN ({TASK_STATES})", name=op.f("ck_tasktoolkit_tasks_state")),
        sa.CheckConstraint(
            "progress IS NULL OR (progress >= 0 AND progress <= 100)",
            name=op.f("ck_tasktoolkit_tasks_progress"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasktoolkit_tasks")),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes, and any resource column a host added.
    op.drop_table("tasktoolkit_tasks")
    op.drop_table("tasktoolkit_operations")
