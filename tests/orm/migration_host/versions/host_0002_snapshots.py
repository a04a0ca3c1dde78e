"""snapshots, a resource type with integer keys, children of volumes

Revision ID: host_0002
Revises: host_0001
Create Date: 2026-11-25 18:00:01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tasktoolkit.orm.migrations import add_resource_column, drop_resource_column

revision: str = "host_0002"
down_revision: str | None = "host_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("volume_id", sa.String(36), nullable=False),
        sa.ForeignKeyConstraint(
            ["volume_id"],
            ["volumes.id"],
            name=op.f("fk_snapshots_volume_id_volumes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
    )
    op.create_index(op.f("ix_snapshots_volume_id"), "snapshots", ["volume_id"])
    add_resource_column(op, "snapshot", referent="snapshots.id", type_=sa.Integer())


def downgrade() -> None:
    drop_resource_column(op, "snapshot", referent="snapshots.id")
    op.drop_table("snapshots")
