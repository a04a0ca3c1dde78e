"""One clock: the database's.

The hosts of one deployment never agree exactly on the time: a worker whose
clock runs 10 minutes behind would write heartbeats that look 10 minutes
old, a reaper 10 minutes ahead would take every healthy task, an API host
2 hours behind would spawn tasks already past their start deadline. So every
time the toolkit writes or compares (heartbeats, deadlines, ``not_before``,
expiry, the purge cutoff) is the database server's, computed in SQL:

- :func:`db_now`: the time the statement runs at, in UTC and in the very
  format :class:`~tasktoolkit.orm.UTCDateTime` stores (so an index on a time
  column serves a comparison with it): PostgreSQL ``statement_timestamp()``
  (a ``timestamptz``), MariaDB/MySQL ``UTC_TIMESTAMP(6)`` (whatever the
  session's time zone: ``NOW()`` would follow it), SQLite
  ``strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'``;
- :func:`later`: a time plus some seconds (a number, a bound value or a
  column), in SQL when the time is, else in Python;
- :func:`read_now`: one read of it, where Python needs the value itself.

A statement built with these is built once and compiles for each database.

SQLite runs inside each process: its ``'now'`` is that process's own clock,
the one clock of the machine every process sharing its file runs on.

Example::

    update(tasks_table).values(heartbeat_at=db_now())
    select(tasks_table.c.id).where(later(tasks_table.c.heartbeat_at, 30) < db_now())
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, overload

from sqlalchemy import Float, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from tasktoolkit.orm._types import UTCDateTime

__all__ = ["Moment", "db_now", "later", "read_now"]

#: A time the database knows: a value read from it, or a SQL expression it computes.
Moment = datetime | ColumnElement[datetime]


#: The database's now, per database (SQLite: what any other gets). Milliseconds are all
#: SQLite's clock has; the zeros make the stored format's six digits.
_NOW = {
    "postgresql": "statement_timestamp()",
    "mysql": "UTC_TIMESTAMP(6)",
    "sqlite": "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')",
}
#: A time plus seconds, per database, as the columns store it.
_PLUS = {
    "postgresql": "({moment} + make_interval(0, 0, 0, 0, 0, 0, {seconds}))",
    "mysql": "TIMESTAMPADD(MICROSECOND, ROUND(({seconds}) * 1000000), {moment})",
    "sqlite": (
        "(strftime('%Y-%m-%d %H:%M:%f', julianday({moment}) + ({seconds}) / 86400.0) || '000')"
    ),
}


def _family(compiler: SQLCompiler) -> str:
    name = compiler.dialect.name
    return "mysql" if name == "mariadb" else name if name in _NOW else "sqlite"


class db_now(FunctionElement[datetime]):
    """The database's current time, UTC, as the time columns store it (see the module docs)."""

    type = UTCDateTime()
    inherit_cache = True
    name = "db_now"


@compiles(db_now)
def _compile_now(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    return _NOW[_family(compiler)]


class _plus_seconds(FunctionElement[datetime]):
    """``moment`` plus ``seconds`` (``NULL`` when either is), in SQL."""

    type = UTCDateTime()
    inherit_cache = True
    name = "plus_seconds"


@compiles(_plus_seconds)
def _compile_plus(element: _plus_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    moment, seconds = (compiler.process(c, **kw) for c in element.clauses)
    return _PLUS[_family(compiler)].format(moment=moment, seconds=seconds)


def _seconds(seconds: float | timedelta | ColumnElement[Any]) -> ColumnElement[Any]:
    if isinstance(seconds, ColumnElement):
        return seconds
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    return literal(seconds, Float())


@overload
def later(moment: datetime, seconds: float | timedelta) -> datetime: ...
@overload
def later(moment: Moment, seconds: float | timedelta | ColumnElement[Any]) -> Moment: ...


def later(moment: Moment, seconds: float | timedelta | ColumnElement[Any]) -> Moment:
    """``moment`` plus ``seconds``: in Python when both are values, else in SQL (where a
    ``NULL`` of either gives ``NULL``).

    :param seconds: a number, a ``timedelta``, or a SQL expression (a column, a
        bound parameter).
    """
    if isinstance(moment, datetime) and not isinstance(seconds, ColumnElement):
        return moment + (seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds))
    return _plus_seconds(moment, _seconds(seconds))


def read_now(connection: Connection) -> datetime:
    """The database's current time: one statement, for where Python needs the value."""
    found: datetime = connection.execute(select(db_now())).scalar_one()
    return found
