"""Column types as the toolkit's revisions write them, spelled out per database.

Revisions use these, not the models' types, so that a revision stays what it
is when a model's type changes. Never change one: add another.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

__all__ = ["exact_string", "utc_datetime"]


def utc_datetime() -> sa.DateTime:
    """``timestamptz`` on PostgreSQL, ``DATETIME(6)`` on MariaDB, ``DATETIME`` on SQLite."""
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def exact_string(length: int) -> sa.String:
    """Compared exactly, case included: ``utf8mb4_bin`` on MariaDB (see ``tasktoolkit_0002``)."""
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
    )
