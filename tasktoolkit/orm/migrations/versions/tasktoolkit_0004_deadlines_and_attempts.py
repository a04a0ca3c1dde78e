"""Deadlines, retries and attempts: nothing stays active for ever.

Revision ID: tasktoolkit_0004
Revises: tasktoolkit_0003
Create Date: 2026-12-02 10:00:00

Tasks get a start deadline, a ``not_before`` (a retry's backoff) and the rest
of their name's rules; operations a request deadline and an error; each ended
attempt of a task a row of ``tasktoolkit_task_attempts``, deleted with its task.
Operations still waiting for the end of their request get the default
request timeout (10 minutes) from their creation, so the reaper ends them too.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tasktoolkit.orm.migrations._columns import exact_string, utc_datetime

revision: str = "tasktoolkit_0004"
down_revision: str | None = "tasktoolkit_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasktoolkit_tasks", sa.Column("start_deadline", utc_datetime(), nullable=True))
    op.add_column("tasktoolkit_tasks", sa.Column("not_before", utc_datetime(), nullable=True))
    op.add_column("tasktoolkit_tasks", sa.Column("rules", sa.String(255), nullable=True))
    op.create_index(
        op.f("ix_tasktoolkit_tasks_start_deadline"),
        "tasktoolkit_tasks",
        ["state", "start_deadline"],
    )
    op.add_column(
        "tasktoolkit_operations", sa.Column("request_deadline", utc_datetime(), nullable=True)
    )
    op.add_column("tasktoolkit_operations", sa.Column("error_code", sa.String(64), nullable=True))
    op.add_column("tasktoolkit_operations", sa.Column("error_message", sa.Text(), nullable=True))
    op.create_index(
        op.f("ix_tasktoolkit_operations_request_deadline"),
        "tasktoolkit_operations",
        ["request_deadline"],
    )
    op.create_table(
        "tasktoolkit_task_attempts",
        sa.Column("task_id", exact_string(36), nullable=False),
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("host", exact_string(255), nullable=True),
        sa.Column("started_at", utc_datetime(), nullable=True),
        sa.Column("finished_at", utc_datetime(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_traceback", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasktoolkit_tasks.id"],
            name=op.f("fk_tasktoolkit_task_attempts_task_id_tasktoolkit_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "number", name=op.f("pk_tasktoolkit_task_attempts")),
    )
    _give_requests_a_deadline()


#: ``created_at`` plus the default request timeout, in each database's words.
_DEADLINE = {
    "postgresql": "created_at + interval '10 minutes'",
    "mysql": "created_at + INTERVAL 10 MINUTE",
    "mariadb": "created_at + INTERVAL 10 MINUTE",
    # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff' text: move the seconds, keep the fraction.
    "sqlite": "strftime('%Y-%m-%d %H:%M:%S', created_at, '+10 minutes') || substr(created_at, 20)",
}


def _give_requests_a_deadline() -> None:
    """Operations still waiting for their request's end: created_at + the default timeout."""
    dialect = op.get_context().dialect.name
    op.execute(
        f"UPDATE tasktoolkit_operations SET request_deadline = {_DEADLINE[dialect]} "
        "WHERE state = 'running' AND http_status IS NULL"
    )


def downgrade() -> None:
    op.drop_table("tasktoolkit_task_attempts")
    op.drop_index(
        op.f("ix_tasktoolkit_operations_request_deadline"), table_name="tasktoolkit_operations"
    )
    with op.batch_alter_table("tasktoolkit_operations") as batch:
        batch.drop_column("error_message")
        batch.drop_column("error_code")
        batch.drop_column("request_deadline")
    op.drop_index(op.f("ix_tasktoolkit_tasks_start_deadline"), table_name="tasktoolkit_tasks")
    with op.batch_alter_table("tasktoolkit_tasks") as batch:
        batch.drop_column("rules")
        batch.drop_column("not_before")
        batch.drop_column("start_deadline")
