"""Alembic migrations: the toolkit's own tables, and what a host's resource models add.

The toolkit keeps a history of its own (version table
``tasktoolkit_alembic_version``, branch label ``tasktoolkit``) beside the
host's; see ``docs/migrations.md``. A host's ``env.py`` runs
:func:`upgrade` before its own revisions, and a host revision that adds a
resource model calls :func:`add_resource_column`.

Example, in a host revision adding the ``port`` resource model::

    from tasktoolkit.orm.migrations import add_resource_column, drop_resource_column

    def upgrade() -> None:
        op.create_table("ports", ...)
        add_resource_column(op, "port", referent="ports.id", type_=sa.String(36))

    def downgrade() -> None:
        drop_resource_column(op, "port", referent="ports.id")
        op.drop_table("ports")
"""

from __future__ import annotations

from tasktoolkit.orm.migrations._commands import (
    BRANCH_LABEL,
    SCRIPT_LOCATION,
    VERSION_TABLE,
    Bind,
    alembic_config,
    check_revision,
    compare_server_default,
    current,
    downgrade,
    heads,
    include_name,
    upgrade,
)
from tasktoolkit.orm.migrations._resource import (
    ResourceColumnNames,
    add_resource_column,
    drop_resource_column,
    resource_column_names,
)

__all__ = [
    "BRANCH_LABEL",
    "SCRIPT_LOCATION",
    "VERSION_TABLE",
    "Bind",
    "ResourceColumnNames",
    "add_resource_column",
    "alembic_config",
    "check_revision",
    "compare_server_default",
    "current",
    "downgrade",
    "drop_resource_column",
    "heads",
    "include_name",
    "resource_column_names",
    "upgrade",
]
