"""Deadlines: the toolkit's database work gives up when the database does not answer.

A database can stop answering without refusing anything: a server stopped by
``SIGSTOP``, a host that hangs, a lock held for ever. Its kernel still accepts
connections and acknowledges what is sent, so TCP keepalives and
``tcp_user_timeout`` never fire, and a frozen server enforces none of its own
timeouts (``statement_timeout``, ``max_statement_time``). Only the client can
give up, so the toolkit does it in the driver, for the work it runs inside
:func:`deadline`:

- **psycopg 3** (PostgreSQL): every wait for the server (connect, statement,
  commit, the pool's ping) is bounded by what is left of the deadline; on
  expiry the connection is closed and ``psycopg.errors.ConnectionTimeout``
  raised, which SQLAlchemy treats as a lost connection (invalidated, never
  reused). A new connection gets ``connect_timeout`` from what is left.
- **PyMySQL** (MariaDB, MySQL): every socket read and write, and the connect,
  time out at what is left of the deadline (PyMySQL's own
  ``read_timeout``/``write_timeout``, set per call).

Outside a :func:`deadline` block connections behave exactly as the host
configured them: :func:`install` only swaps in a subclass of the driver's
connection that reads the deadline. Other drivers and SQLite get no
client-side deadline (a SQLite database does not freeze; its lock waits are
bounded by its own ``timeout``).

Example::

    with deadline(5):                 # the toolkit does this around its own work
        with Session(engine) as session:
            session.execute(...)      # OperationalError (connection lost) after 5 s
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = [
    "check_deadline",
    "deadline",
    "fresh_deadline",
    "install",
    "remaining",
]

# (monotonic time when the deadline passes, its length in seconds)
_deadline: ContextVar[tuple[float, float] | None] = ContextVar("tasktoolkit.deadline", default=None)


def check_deadline(seconds: object, *, what: str = "deadline") -> float | None:
    """``seconds`` as a deadline: a number > 0 (at most a day), or ``None`` for none.

    :raises ValueError: anything else.
    """
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"{what} must be a number of seconds or None, got {seconds!r}")
    if not 0 < seconds <= 86400 or math.isnan(seconds):
        raise ValueError(f"{what} must be more than 0 and at most 86400 seconds, got {seconds!r}")
    return float(seconds)


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Bound the database waits of the block to ``seconds`` in all (``None``: no bound).

    An enclosing deadline that passes sooner still holds.
    """
    if seconds is None:
        yield
        return
    until = time.monotonic() + seconds
    outer = _deadline.get()
    if outer is not None and outer[0] < until:
        until, seconds = outer
    token = _deadline.set((until, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


@contextmanager
def fresh_deadline(seconds: float | None) -> Iterator[None]:
    """:func:`deadline`, counted from now whatever encloses it: for work that starts
    long after the block around it began (a waiting request's next read)."""
    token = _deadline.set(None)
    try:
        with deadline(seconds):
            yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline (0 once it passed), or ``None`` outside one."""
    current = _deadline.get()
    if current is None:
        return None
    return max(0.0, current[0] - time.monotonic())


def _expired_detail() -> str:
    current = _deadline.get()
    seconds = current[1] if current is not None else 0
    return f"the database did not answer within the deadline ({seconds:g} s)"


# -- psycopg 3 -----------------------------------------------------------------


@cache
def _psycopg_connection() -> type[Any] | None:
    import psycopg
    from psycopg import errors

    wait_timeout: type[Exception] | None = getattr(errors, "_WaitTimeout", None)
    parameters = inspect.signature(psycopg.Connection.wait).parameters
    if wait_timeout is None or "timeout" not in parameters:
        return None  # psycopg < 3.2: its waits cannot be bounded
    timed_out: type[Exception] = wait_timeout

    class DeadlineConnection(psycopg.Connection[Any]):
        """A psycopg connection whose waits end at the current deadline."""

        def wait(self, gen: Any, interval: Any = None, timeout: float | None = None) -> Any:
            left = remaining()
            if left is not None and (timeout is None or left < timeout):
                timeout = max(left, 0.001)
            options: dict[str, Any] = {"timeout": timeout}
            if interval is not None:
                options["interval"] = interval
            try:
                return super().wait(gen, **options)
            except timed_out:
                if left is None:
                    raise  # psycopg's own timeout: psycopg handles it
                # The protocol stopped half way: the connection is unusable.
                self.pgconn.finish()
                raise errors.ConnectionTimeout(_expired_detail()) from None

    return DeadlineConnection


def _psycopg_connect(cargs: list[Any], cparams: dict[str, Any]) -> Any:
    connection_class = _psycopg_connection()
    if connection_class is None:
        return None
    left = remaining()
    if left is not None:
        if left <= 0:
            from psycopg import errors

            raise errors.ConnectionTimeout(_expired_detail())
        # libpq counts whole seconds, and at least 2.
        cparams["connect_timeout"] = max(2, math.ceil(left))
    return connection_class.connect(*cargs, **cparams)


# -- PyMySQL -------------------------------------------------------------------


@cache
def _pymysql_connection() -> type[Any]:
    import pymysql

    class DeadlineConnection(pymysql.connections.Connection):  # type: ignore[misc]
        """A PyMySQL connection whose socket timeouts end at the current deadline."""

        # PyMySQL sets the socket's timeout from these before each read and write.
        _read_timeout = _bounded_timeout("_tt_read_timeout")
        _write_timeout = _bounded_timeout("_tt_write_timeout")

    return DeadlineConnection


def _bounded_timeout(key: str) -> property:
    """A timeout attribute kept in ``key`` as configured, read as bounded by the deadline."""

    def get(self: Any) -> float | None:
        return _bounded(self.__dict__.get(key))

    def set_(self: Any, value: float | None) -> None:
        self.__dict__[key] = value

    return property(get, set_)


def _bounded(configured: float | None) -> float | None:
    left = remaining()
    if left is None:
        return configured
    left = max(left, 0.001)
    return left if configured is None else min(configured, left)


def _pymysql_connect(cargs: list[Any], cparams: dict[str, Any]) -> Any:
    left = remaining()
    if left is not None:
        if left <= 0:
            import pymysql

            raise pymysql.err.OperationalError(2013, _expired_detail())
        configured = cparams.get("connect_timeout")
        cparams["connect_timeout"] = left if configured is None else min(configured, left)
    return _pymysql_connection()(*cargs, **cparams)


# -- installing ------------------------------------------------------------------


def _do_connect(
    dialect: Dialect, record: ConnectionPoolEntry, cargs: list[Any], cparams: dict[str, Any]
) -> Any:
    if dialect.driver == "psycopg":
        return _psycopg_connect(cargs, cparams)
    return _pymysql_connect(cargs, cparams)


def install(engine: Engine) -> None:
    """Let :func:`deadline` bound the waits of ``engine``'s new connections; idempotent.

    Only sync psycopg and PyMySQL engines are concerned; others are left alone.
    """
    dialect = engine.dialect
    if getattr(dialect, "is_async", False) or dialect.driver not in ("psycopg", "pymysql"):
        return
    if not event.contains(engine, "do_connect", _do_connect):
        event.listen(engine, "do_connect", _do_connect)
