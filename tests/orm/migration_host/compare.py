"""Compare a migrated database with the example host's models and the toolkit's records.

Run as ``python -m tests.orm.migration_host.compare URL`` in a process of its
own, so the metadata is exactly the toolkit's plus this host's. Prints JSON:

- ``diffs``: what Alembic's ``compare_metadata`` finds (types, nullability,
  indexes, foreign keys with their ``ON DELETE``, server defaults), each as
  ``[operation, table, name]``;
- ``check_constraints``: per table, the named CHECK constraints found and
  expected (Alembic does not compare them);
- ``datetime_types``: the database type of every ``UTCDateTime`` column
  (Alembic does not compare MariaDB's fractional seconds);
- ``tables``: every table in the database.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Column, Index, Table, create_engine, inspect
from sqlalchemy.schema import ForeignKeyConstraint

from tasktoolkit import orm
from tasktoolkit.orm import UTCDateTime
from tasktoolkit.orm import migrations as tasktoolkit_migrations
from tests.orm.migration_host.models import Base

METADATA = [Base.metadata, orm.metadata]


def summary(diff: Any) -> list[str]:
    """``[operation, table, name]`` of one ``compare_metadata`` entry."""
    if isinstance(diff, list):  # modify_* entries come as a list of tuples
        op, _schema, table, column = diff[0][:4]
        return [op, table, column]
    op, *rest = diff
    obj = rest[-1] if op.startswith(("add_", "remove_")) else None
    if isinstance(obj, Table):
        return [op, obj.name, ""]
    if isinstance(obj, Column):
        return [op, rest[1], obj.name]
    if isinstance(obj, (Index, ForeignKeyConstraint)):
        return [op, obj.table.name, str(obj.name)]
    return [op, repr(rest), ""]


def main(url: str) -> None:
    engine = create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": tasktoolkit_migrations.compare_server_default,
                "include_name": tasktoolkit_migrations.include_name,
            },
        )
        diffs = [summary(d) for d in compare_metadata(context, METADATA)]  # type: ignore[arg-type]
        inspector = inspect(conn)
        tables = sorted(inspector.get_table_names())
        checks: dict[str, dict[str, list[str]]] = {}
        datetimes: dict[str, str] = {}
        for metadata in METADATA:
            for table in metadata.sorted_tables:
                if table.name not in tables:
                    continue
                expected = sorted(
                    str(c.name) for c in table.constraints if isinstance(c, CheckConstraint)
                )
                found = sorted(str(c["name"]) for c in inspector.get_check_constraints(table.name))
                checks[table.name] = {"expected": expected, "found": found}
                columns = {c["name"]: c for c in inspector.get_columns(table.name)}
                for column in table.columns:
                    if isinstance(column.type, UTCDateTime) and column.name in columns:
                        found_type = columns[column.name]["type"]
                        datetimes[f"{table.name}.{column.name}"] = str(
                            found_type.compile(dialect=conn.dialect)
                        )
    engine.dispose()
    json.dump(
        {
            "diffs": diffs,
            "check_constraints": checks,
            "datetime_types": datetimes,
            "tables": tables,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main(sys.argv[1])
