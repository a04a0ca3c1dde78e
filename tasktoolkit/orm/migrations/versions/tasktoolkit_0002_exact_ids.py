"""Ids and names compare exactly on MariaDB and MySQL (``utf8mb4_bin``).

Revision ID: tasktoolkit_0002
Revises: tasktoolkit_0001
Create Date: 2026-12-01 04:30:00

MariaDB and MySQL compare text by the column's collation, which by default
ignores case: ``GET /ports/<UPPER-CASE-ID>/tasks`` found the tasks of the
lower-case id there, and a project ``DEMO`` saw the records of ``demo``.
PostgreSQL and SQLite compare exactly; this revision does nothing on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "tasktoolkit_0002"
down_revision: str | None = "tasktoolkit_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: table -> (column, length, nullable)
COLUMNS = {
    "tasktoolkit_operations": [
        ("id", 40, False),
        ("global_request_id", 40, True),
        ("action", 64, True),
        ("resource_type", 64, True),
        ("resource_id", 64, True),
        ("project_id", 64, True),
        ("user_id", 64, True),
    ],
    "tasktoolkit_tasks": [
        ("id", 36, False),
        ("request_id", 40, True),
        ("resource_type", 64, False),
        ("resource_id", 64, False),
        ("name", 128, False),
        ("host", 255, True),
        ("project_id", 64, True),
        ("user_id", 64, True),
    ],
}


def _alter(collation: str | None) -> None:
    if op.get_context().dialect.name not in ("mysql", "mariadb"):
        return
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for name, length, nullable in columns:
                batch.alter_column(
                    name,
                    type_=mysql.VARCHAR(length, charset="utf8mb4", collation=collation),
                    existing_type=sa.String(length),
                    existing_nullable=nullable,
                )


def upgrade() -> None:
    _alter("utf8mb4_bin")


def downgrade() -> None:
    _alter(None)
