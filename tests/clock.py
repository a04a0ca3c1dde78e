"""The database's clock in tests: rows made older than it, and waits that poll it.

The toolkit compares every time with the database's own (``db_now``), so a
test moves time by moving rows back relative to it, never by faking a host's
clock in-process or passing a ``now``.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from tasktoolkit.orm._clock import db_now, later, read_now
from tasktoolkit.orm._reaper import _WATCH, _WATCHES
from tasktoolkit.orm._records import (
    attempts_table,
    idempotency_keys_table,
    operations_table,
    reaper_watch_table,
    tasks_table,
)
from tasktoolkit.orm._types import UTCDateTime

__all__ = ["age", "database_now", "passed", "wait_past", "watched"]


def database_now(bind: Engine | Connection | Session) -> datetime:
    """The database's time now."""
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return read_now(conn)
    connection = bind.connection() if isinstance(bind, Session) else bind
    return read_now(connection)


def age(engine: Engine, table: Table, *where: Any, **ago: timedelta) -> None:
    """Set these times of the rows of ``table`` matching ``where`` (all when none) to that
    long before the database's now."""
    values = {name: later(db_now(), -d) for name, d in ago.items()}
    with engine.begin() as conn:
        conn.execute(update(table).where(*where).values(values))


def watched(engine: Engine, for_: timedelta) -> None:
    """Make the reapers' watch as if they had looked without a gap for ``for_``, the
    last look just now (so that lost workers may be called lost)."""
    with engine.begin() as conn:
        dialect = "mysql" if conn.dialect.name == "mariadb" else conn.dialect.name
        conn.execute(_WATCHES[dialect], {"tt_gap": 86400.0})
        conn.execute(
            update(reaper_watch_table)
            .where(reaper_watch_table.c.name == _WATCH)
            .values(since=later(db_now(), -for_), seen_at=db_now())
        )


def passed(engine: Engine, by: timedelta) -> None:
    """As if ``by`` had passed, reapers watching all along: every time of every task,
    attempt, operation and key moves ``by`` back, and so does the start of the
    reapers' watch (its last look is now)."""
    with engine.begin() as conn:
        for table in (tasks_table, attempts_table, operations_table, idempotency_keys_table):
            times = [c for c in table.c if isinstance(c.type, UTCDateTime)]
            conn.execute(update(table).values({c.name: later(c, -by) for c in times}))
        dialect = "mysql" if conn.dialect.name == "mariadb" else conn.dialect.name
        conn.execute(_WATCHES[dialect], {"tt_gap": 86400.0})
        conn.execute(
            update(reaper_watch_table)
            .where(reaper_watch_table.c.name == _WATCH)
            .values(since=later(reaper_watch_table.c.since, -by), seen_at=db_now())
        )


def wait_past(engine: Engine, moment: datetime, timeout: float = 10.0) -> None:
    """Poll the database's clock until it is past ``moment``."""
    deadline = time.monotonic() + timeout
    while database_now(engine) <= moment:
        assert time.monotonic() < deadline, f"the database's clock did not pass {moment}"
        time.sleep(0.005)
