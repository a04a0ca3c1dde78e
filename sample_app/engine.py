"""The sample's engine: any SQLAlchemy URL, with SQLite set up for several threads.

Example::

    engine = create_sample_engine("sqlite:///sample_app.db", create=True)
    engine = create_sample_engine("postgresql+psycopg://postgres@127.0.0.1/sample")
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from sample_app import models as _models  # noqa: F401  (declares the resource types)
from tasktoolkit import orm

__all__ = ["DEADLINE", "create_sample_engine"]

#: Seconds the sample's own database work may take before it answers 503.
DEADLINE = 5.0


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event open transactions (below), not the driver.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # Readers do not wait for the writer in WAL mode.
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return  # each statement commits on its own: no transaction to open
    # A deferred transaction that reads and then writes fails at once with
    # "database is locked" when another thread wrote in between; taking the
    # write lock up front makes concurrent writers wait their turn instead.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_sample_engine(url: str | URL, *, create: bool = False, **options: Any) -> Engine:
    """An engine on ``url``, prepared for the toolkit.

    :param create: create the sample's and the toolkit's tables if they are missing
        (use the migrations in production).
    :param options: passed on to :func:`sqlalchemy.create_engine`.
    """
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ValueError(
                "sample_app needs a SQLite file (sqlite:///path.db), not an in-memory database: "
                "the API and the agents use several connections"
            )
        options.setdefault("connect_args", {}).setdefault("timeout", 30)
        engine = create_engine(url, **options)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        options.setdefault("pool_pre_ping", True)
        # Waiting for a pooled connection counts against the request's deadline too.
        options.setdefault("pool_timeout", DEADLINE)
        engine = create_engine(url, **options)
    orm.prepare_engine(engine)
    if create:
        orm.create_all(engine)
    return engine
