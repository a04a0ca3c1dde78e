"""Engines: preparing the host's, the toolkit's own, and what each database can do.

SQLite enforces foreign keys (and so the task cascades) only on connections
that turn them on; :func:`prepare_engine` makes every connection of an engine
do so, including those already in its pool. On PostgreSQL (psycopg) and
MariaDB (PyMySQL) it lets the toolkit's deadlines
(:func:`~tasktoolkit.orm.deadline`) bound the waits of new connections. A
pooled connection must not be shared by two processes; :func:`prepare_engine`
makes the engine forget its pool in a forked child. Everything in the toolkit
that is given an engine calls it.

The database-specific switches the toolkit's own statements rely on live
here too, each once: READ COMMITTED on MariaDB/MySQL (:func:`read_committed`),
``SKIP LOCKED`` where the server has it (:func:`supports_skip_locked`), and
the operation middleware's AUTOCOMMIT engine (:func:`autocommit_engine`).
"""

from __future__ import annotations

import functools
import os
import sys
import weakref
from typing import Any, TypeVar

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session
from sqlalchemy.pool import (
    ConnectionPoolEntry,
    PoolProxiedConnection,
    SingletonThreadPool,
    StaticPool,
)

from tasktoolkit.orm._deadline import install as install_deadline
from tasktoolkit.orm._records import metadata

__all__ = [
    "autocommit_engine",
    "create_all",
    "drop_all",
    "host_metadatas",
    "is_mysql",
    "prepare_engine",
    "read_committed",
    "supports_skip_locked",
]

_B = TypeVar("_B", Engine, Connection)

_FK_ON = "tasktoolkit_foreign_keys"
_PID = "tasktoolkit_pid"
_FORK_SAFE = "_tasktoolkit_fork_safe"


def _sqlite_foreign_keys(dbapi_connection: Any, record: ConnectionPoolEntry, *_: Any) -> None:
    if record.info.get(_FK_ON):
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()
    record.info[_FK_ON] = True


def _remember_pid(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_PID] = os.getpid()


def _refuse_other_process(
    dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
) -> None:
    # SQLAlchemy's "pool events" recipe for os.fork(): a connection made by
    # another process is dropped from this process's pool, never closed (its
    # socket is the parent's), and the pool connects anew.
    pid = os.getpid()
    owner = record.info.setdefault(_PID, pid)
    if owner != pid:
        record.dbapi_connection = proxy.dbapi_connection = None  # type: ignore[misc]
        raise DisconnectionError(f"connection of process {owner} checked out in process {pid}")


def _forget_pool(ref: weakref.ref[Engine]) -> None:
    engine = ref()
    if engine is not None:
        # close=False: the parent's connections stay open, for the parent.
        engine.dispose(close=False)


def _fork_safe(engine: Engine) -> None:
    """Give a forked child a pool of its own, whatever the server that forks.

    ``os.register_at_fork`` covers ``os.fork()`` (gunicorn ``--preload``,
    multiprocessing); uWSGI forks without running those hooks unless
    ``py-call-osafterfork`` is set, so its own ``uwsgi.post_fork_hook`` is
    chained too. Both run before the child serves anything, so no connection
    is used, pinged or closed by two processes. The pid check at checkout is
    the last guard, for a fork that runs neither.
    """
    if getattr(engine, _FORK_SAFE, False):
        return
    setattr(engine, _FORK_SAFE, True)
    if not event.contains(engine.pool, "checkout", _refuse_other_process):
        event.listen(engine.pool, "connect", _remember_pid)
        event.listen(engine.pool, "checkout", _refuse_other_process, insert=True)
    # A weak reference: the hooks live as long as the process, the engine need not.
    forget = functools.partial(_forget_pool, weakref.ref(engine))
    os.register_at_fork(after_in_child=forget)
    uwsgi = sys.modules.get("uwsgi")  # only inside uWSGI, which made it
    if uwsgi is not None:
        previous = getattr(uwsgi, "post_fork_hook", None)

        def post_fork_hook() -> None:
            forget()
            if previous is not None:
                previous()

        setattr(uwsgi, "post_fork_hook", post_fork_hook)  # noqa: B010  (a module of C)


def prepare_engine(engine: Engine) -> Engine:
    """Make ``engine`` fit for the toolkit; idempotent, returns ``engine``.

    - Safe across ``fork()``: a child process (a gunicorn worker of a
      ``--preload`` app, a uWSGI worker without ``lazy-apps``, a
      ``multiprocessing`` child) starts with an empty pool of its own; the
      parent's connections are left open for the parent. Call it before the fork.
    - On SQLite: ``PRAGMA foreign_keys=ON`` on every connection, so that deleting
      a resource deletes its tasks.
    - With psycopg and PyMySQL: new connections are of a subclass of the
      driver's whose waits end at the current :func:`~tasktoolkit.orm.deadline`;
      outside one they behave as configured.
    """
    _fork_safe(engine)
    install_deadline(engine)
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


def is_mysql(bind: Engine | Connection) -> bool:
    """Whether ``bind`` talks to MariaDB or MySQL."""
    return bind.dialect.name in ("mysql", "mariadb")


def read_committed(bind: _B) -> _B:
    """``bind`` with READ COMMITTED on MariaDB/MySQL (their default is REPEATABLE READ).

    The toolkit's short transactions need it there: a re-read after losing a
    compare-and-set must see the latest commit, not the transaction's snapshot,
    and claims, purges and reaps must take no gap locks that would hold up
    inserts of new tasks. Other databases default to it already.
    """
    if is_mysql(bind):
        return bind.execution_options(isolation_level="READ COMMITTED")
    return bind


def supports_skip_locked(bind: Session | Engine | Connection) -> bool:
    """Whether the database has ``SELECT ... FOR UPDATE SKIP LOCKED``."""
    dialect = (bind.get_bind() if isinstance(bind, Session) else bind).dialect
    if dialect.name == "postgresql":
        return True
    if dialect.name in ("mysql", "mariadb"):
        version = dialect.server_version_info or ()
        if getattr(dialect, "is_mariadb", False):
            return version >= (10, 6)
        return version >= (8, 0, 1)
    return False


def autocommit_engine(
    engine: Engine, *, durable: bool, deadline: float | None = None
) -> tuple[Engine, bool]:
    """An AUTOCOMMIT engine on ``engine``'s database; whether it has a pool of its own.

    It gets its own pool (same connect arguments and pool events, from
    ``Pool.recreate``) whose connections stay in AUTOCOMMIT: switching a
    pooled connection in and out of it costs MariaDB round trips each time,
    and SQLite a ``PRAGMA`` each way and its prepared statements (measured:
    the end of a request 0.68 ms switching, 0.42 ms on a pool of its own).
    Only an engine whose pool holds one connection (SQLite ``:memory:``)
    is shared, as another pool would not see the same database.

    :param durable: on PostgreSQL, when false, the own connections commit
        with ``synchronous_commit = off``.
    :param deadline: the own pool's checkout timeout, and the server's own
        statement and lock timeouts on the own connections, in seconds.
    """
    if isinstance(engine.pool, (SingletonThreadPool, StaticPool)):
        return engine.execution_options(isolation_level="AUTOCOMMIT"), False
    pool = engine.pool.recreate()
    if deadline is not None and hasattr(pool, "_timeout"):
        # QueuePool takes its checkout timeout only as a constructor argument,
        # which recreate() copies from the host's pool.
        pool._timeout = deadline
    try:
        # An AUTOCOMMIT connection has nothing to roll back when it goes back
        # to the pool, but PyMySQL would send a ROLLBACK anyway: one more round
        # trip per request. (The option is new in SQLAlchemy 2.0.43.)
        own = create_engine(
            engine.url, pool=pool, isolation_level="AUTOCOMMIT", skip_autocommit_rollback=True
        )
    except TypeError:
        own = create_engine(engine.url, pool=pool, isolation_level="AUTOCOMMIT")
    settings = []
    if not durable and own.dialect.name == "postgresql":
        # Safe for the operation: PostgreSQL flushes its WAL in order, so the
        # app's own (synchronous) commit, which comes after the INSERT, makes
        # the INSERT durable too; only a server crash in the ~0.6 s before any
        # later flush can lose an operation write.
        settings.append("SET synchronous_commit TO off")
    if deadline is not None:
        # A server that is slow (not frozen) cancels the statement itself and
        # the connection survives; a frozen one is the client's deadline's.
        if own.dialect.name == "postgresql":
            milliseconds = max(1, int(deadline * 1000))
            settings.append(f"SET statement_timeout = {milliseconds}")
            settings.append(f"SET lock_timeout = {milliseconds}")
        elif getattr(own.dialect, "is_mariadb", False):
            settings.append(
                f"SET SESSION max_statement_time = {deadline:.3f}, "
                f"innodb_lock_wait_timeout = {max(1, int(deadline))}"
            )
    if settings:
        event.listen(own, "connect", lambda dbapi, record: _run_settings(dbapi, settings))
    return prepare_engine(own), True


def _run_settings(dbapi_connection: Any, settings: list[str]) -> None:
    # Once per connection, not per request.
    cursor = dbapi_connection.cursor()
    try:
        for statement in settings:
            cursor.execute(statement)
    finally:
        cursor.close()
    dbapi_connection.commit()
