"""Host migration helpers: the column, index and foreign key a resource model adds.

A model declaring ``__resource_type__ = "port"`` adds to ``tasktoolkit_tasks``
a nullable column ``port_id`` of its primary key's type, a foreign key
``fk_tasktoolkit_tasks_port_id_ports`` to that key with ``ON DELETE CASCADE``,
and an index ``ix_tasktoolkit_tasks_port_id``. The host's revision that
creates the model's table adds them with :func:`add_resource_column`, which
spells every name exactly as the mixin does (through the toolkit's
:data:`~tasktoolkit.orm.NAMING_CONVENTION`).

On SQLite, which cannot add a named foreign key to an existing table, the
tasks table is rebuilt in Alembic's batch mode (a copy of its rows); elsewhere
these are plain ``ALTER TABLE`` statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tasktoolkit._checks import RESOURCE_TYPE
from tasktoolkit.orm._records import NAMING_CONVENTION, tasks_table

if TYPE_CHECKING:
    from alembic.operations import Operations

__all__ = [
    "ResourceColumnNames",
    "add_resource_column",
    "drop_resource_column",
    "resource_column_names",
]

TASKS_TABLE = tasks_table.name


@dataclass(frozen=True, slots=True)
class ResourceColumnNames:
    """The names of what one resource type adds to ``tasktoolkit_tasks``."""

    column: str
    index: str
    foreign_key: str
    referred_table: str
    referred_column: str
    referred_schema: str | None


def resource_column_names(resource_type: str, referent: str = "ports.id") -> ResourceColumnNames:
    """The names the mixin gives resource type ``resource_type``'s column, index and key.

    :param referent: the primary key the column refers to, ``"table.column"``
        (or ``"schema.table.column"``).

    Example::

        >>> resource_column_names("port", "ports.id").foreign_key
        'fk_tasktoolkit_tasks_port_id_ports'
    """
    if not isinstance(resource_type, str) or not RESOURCE_TYPE.match(resource_type):
        raise ValueError(
            "resource_type must be lower-case letters, digits and '_' (at most 39), "
            f"got {resource_type!r}"
        )
    parts = referent.split(".") if isinstance(referent, str) else []
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(
            f"referent must be 'table.column' or 'schema.table.column', got {referent!r}"
        )
    schema = parts[0] if len(parts) == 3 else None
    table, column = parts[-2], parts[-1]
    column_name = f"{resource_type}_id"
    foreign_key = NAMING_CONVENTION["fk"] % {
        "table_name": TASKS_TABLE,
        "column_0_name": column_name,
        "referred_table_name": table,
    }
    return ResourceColumnNames(
        column=column_name,
        index=f"ix_{TASKS_TABLE}_{column_name}",
        foreign_key=foreign_key,
        referred_table=table,
        referred_column=column,
        referred_schema=schema,
    )


def add_resource_column(
    op: Operations,
    resource_type: str,
    referent: str = "ports.id",
    type_: sa.types.TypeEngine[Any] | None = None,
) -> ResourceColumnNames:
    """Add what resource type ``resource_type`` needs to ``tasktoolkit_tasks``.

    Call it in the host revision that creates the resource's table, after
    ``op.create_table``; the toolkit's tables must exist already (run
    :func:`tasktoolkit.orm.migrations.upgrade` first: a host ``env.py`` does).

    :param op: the revision's ``alembic.op``.
    :param referent: the resource table's primary key, ``"table.column"``.
    :param type_: that key's type (``sa.String(36)`` when omitted; ``sa.Integer()``
        for an integer key). It must match the key's type exactly.

    Example::

        def upgrade() -> None:
            op.create_table("ports", sa.Column("id", sa.String(36), primary_key=True), ...)
            add_resource_column(op, "port", referent="ports.id", type_=sa.String(36))
    """
    names = resource_column_names(resource_type, referent)
    column_type = sa.String(36) if type_ is None else type_
    # Batch mode: plain ALTERs where the database can, a table copy on SQLite.
    with op.batch_alter_table(TASKS_TABLE) as batch:
        batch.add_column(sa.Column(names.column, column_type, nullable=True))
        # The index before the key: MariaDB would otherwise create an index of
        # its own for the key, under the key's name.
        batch.create_index(op.f(names.index), [names.column])
        batch.create_foreign_key(
            op.f(names.foreign_key),
            names.referred_table,
            [names.column],
            [names.referred_column],
            referent_schema=names.referred_schema,
            ondelete="CASCADE",
        )
    return names


def drop_resource_column(
    op: Operations,
    resource_type: str,
    referent: str = "ports.id",
    *,
    delete_tasks: bool = True,
) -> ResourceColumnNames:
    """Undo :func:`add_resource_column`: the resource's tasks, the key, the index, the column.

    Call it before dropping the resource's table.

    :param delete_tasks: delete the tasks of resources of this type first, as
        dropping the resources' rows would have; with ``False`` they stay, tied
        to nothing but their ``resource_type`` and ``resource_id``, and are
        never deleted with a resource again.
    """
    names = resource_column_names(resource_type, referent)
    if delete_tasks:
        tasks = sa.table(TASKS_TABLE, sa.column(names.column))
        op.execute(tasks.delete().where(tasks.c[names.column].is_not(None)))
    with op.batch_alter_table(TASKS_TABLE) as batch:
        batch.drop_constraint(op.f(names.foreign_key), type_="foreignkey")
        batch.drop_index(op.f(names.index))
        batch.drop_column(names.column)
    return names
