"""volumes, a resource type with string keys

Revision ID: host_0001
Revises:
Create Date: 2026-11-25 18:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tasktoolkit.orm.migrations import add_resource_column, drop_resource_column

revision: str = "host_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "volumes",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volumes")),
    )
    add_resource_column(op, "volume", referent="volumes.id", type_=sa.String(36))


def downgrade() -> None:
    drop_resource_column(op, "volume", referent="volumes.id")
    op.drop_table("volumes")
