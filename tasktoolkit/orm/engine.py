"""Preparing an engine, and creating the toolkit's tables with the host's.

SQLite enforces foreign keys (and so the task cascades) only on connections
that turn them on; :func:`prepare_engine` makes every connection of an engine
do so, including those already in its pool. Everything in the toolkit that is
given an engine calls it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import ConnectionPoolEntry

from tasktoolkit.orm.records import metadata

__all__ = ["create_all", "drop_all", "host_metadatas", "prepare_engine"]

_FK_ON = "tasktoolkit_foreign_keys"


def _sqlite_foreign_keys(dbapi_connection: Any, record: ConnectionPoolEntry, *_: Any) -> None:
    if record.info.get(_FK_ON):
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()
    record.info[_FK_ON] = True


def prepare_engine(engine: Engine) -> Engine:
    """Make ``engine`` fit for the toolkit; idempotent, returns ``engine``.

    On SQLite: ``PRAGMA foreign_keys=ON`` on every connection, so that deleting a
    resource deletes its tasks. Other backends need nothing.
    """
    if engine.dialect.name == "sqlite" and not event.contains(
        engine.pool, "checkout", _sqlite_foreign_keys
    ):
        # "checkout" (not "connect") also reaches connections pooled before this
        # call; the pool entry remembers that its connection is done.
        event.listen(engine.pool, "checkout", _sqlite_foreign_keys)
    return engine


def host_metadatas() -> list[MetaData]:
    """The host metadatas the toolkit's tables refer to (through resource columns)."""
    found: list[MetaData] = []
    for table in metadata.sorted_tables:
        for fk in table.foreign_keys:
            other = fk.column.table.metadata
            if other is not metadata and other not in found:
                found.append(other)
    return found


def create_all(bind: Engine | Connection, *, include_host: bool = True) -> None:
    """Create the toolkit's tables (after the host tables they refer to).

    :param include_host: also create every host table the resource columns refer
        to (``Base.metadata.create_all``), first.
    """
    if isinstance(bind, Engine):
        prepare_engine(bind)
    if include_host:
        for host in host_metadatas():
            host.create_all(bind)
    metadata.create_all(bind)


def drop_all(bind: Engine | Connection, *, include_host: bool = True) -> None:
    """Drop the toolkit's tables (and then the host tables they refer to)."""
    metadata.drop_all(bind)
    if include_host:
        for host in reversed(host_metadatas()):
            host.drop_all(bind)
