"""Lifespan: purging expired tasks and operations, in short batches.

:func:`purge` deletes tasks and operations whose ``expires_at`` has passed,
in batches: each batch selects up to ``batch_size`` ids (a setting) through the
``expires_at`` index (``FOR UPDATE SKIP LOCKED`` where the database has it,
so two purges take different rows and neither waits for rows an API request
holds), then deletes exactly those ids, re-checking ``expires_at``, in its
own short transaction. No statement ever scans or locks more than one batch,
a purge never deletes a record that has not expired, and the counts it
reports are the rows its own ``DELETE`` statements removed (``rowcount``),
so two purges running at once never count a row twice.

``older_than`` narrows it to records that expired at least that long ago:
a record goes when ``expires_at <= now - older_than``, ``now`` being the
database's, read once when the purge starts (never the purging host's: one
whose clock runs days fast would delete records that have not expired).

Each transaction is bounded by the settings' ``deadline`` (see
:mod:`tasktoolkit.orm._deadline`): a database that stops answering costs a
purge that long, then one more try on a fresh connection, then an error.

Example::

    purge(engine, settings=Settings(batch_size=1000), older_than=timedelta(days=1))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast

from sqlalchemy import Table, delete, func, literal, select
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from tasktoolkit.errors import InvalidDurationError
from tasktoolkit.hooks import Event, hooks_of
from tasktoolkit.orm._clock import read_now
from tasktoolkit.orm._deadline import deadline as within
from tasktoolkit.orm._engine import supports_skip_locked
from tasktoolkit.orm._expiry import MAX_TTL
from tasktoolkit.orm._records import operations_table, tasks_table
from tasktoolkit.orm._retry import in_transaction, short_sessions
from tasktoolkit.orm._types import UTCDateTime
from tasktoolkit.settings import Settings, settings_or_default

__all__ = ["PurgeResult", "expired", "purge"]

#: How long the slower of a batch's two statements (select, delete) should take at
#: most. A fifth of the 250 ms bar: a statement that meets a busy server (a cold
#: cache, InnoDB flushing dirty pages) takes up to four or five times as long.
_STATEMENT_TARGET_S = 0.05
#: The first batch's size, whatever ``batch_size`` allows: the database's speed is
#: not known yet (a thousand rows on a cold default MariaDB took 380 ms).
_FIRST_BATCH = 100
_MIN_BATCH = 10


def _check_older_than(older_than: object) -> timedelta:
    if not isinstance(older_than, timedelta):
        raise InvalidDurationError(f"older_than must be a timedelta, got {older_than!r}")
    if older_than < timedelta(0) or older_than > MAX_TTL:
        raise InvalidDurationError(f"older_than must be within 0 and {MAX_TTL.days} days")
    return older_than


def expired(table: Table, cutoff: datetime) -> ColumnElement[bool]:
    """``expires_at <= cutoff`` for the tasks or operations table: the records purge removes."""
    return table.c.expires_at <= literal(cutoff, UTCDateTime())


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge removed (or, on a dry run, would remove).

    :param cutoff: the records that expired by then went (the database's time
        when the purge started, less ``older_than``).
    """

    tasks: int
    operations: int
    cutoff: datetime
    dry_run: bool = False
    seconds: float = 0.0


def _count_expired(
    sessions: sessionmaker[Session], cutoff: datetime, seconds: float | None
) -> tuple[int, int]:
    with within(seconds), sessions() as session:
        tasks, operations = (
            session.execute(
                select(func.count()).select_from(t).where(expired(t, cutoff))
            ).scalar_one()
            for t in (tasks_table, operations_table)
        )
    return tasks, operations


def _next_batch_size(size: int, slowest: float, limit: int) -> int:
    """The size of the next purge batch after one of ``size`` rows whose slower
    statement took ``slowest`` seconds, ``limit`` being the most allowed.

    Over the target, the size shrinks to what would have met it, at least by
    half (not below 10 rows, or the size if smaller); under half the target it
    grows by half (up to ``limit``); in between it stays, so that one quick
    batch after a slow one does not grow it straight back into the slow spell.
    """
    if slowest > _STATEMENT_TARGET_S:
        met = int(size * _STATEMENT_TARGET_S / slowest)
        return max(min(size, _MIN_BATCH), min(size // 2, met))
    if slowest < _STATEMENT_TARGET_S / 2:
        return min(limit, size + max(1, size // 2))
    return size


def _purge_batch(
    session: Session, *, table: Table, cutoff: datetime, size: int, floor: datetime | None
) -> tuple[int, int, datetime | None, float]:
    """Delete up to ``size`` expired rows from ``floor`` on.

    :returns: rows selected, rows deleted, the floor of the next batch, and the
        seconds the slower of the two statements took.
    """
    where = [expired(table, cutoff)]
    if floor is not None:
        # Start where the previous batch ended: the index entries before it are
        # rows just deleted, which PostgreSQL (dead tuples) and InnoDB
        # (delete-marked records) would otherwise walk over on every batch.
        where.append(table.c.expires_at >= literal(floor, UTCDateTime()))
    query = (
        select(table.c.id, table.c.expires_at)
        .where(*where)
        .order_by(table.c.expires_at)
        .limit(size)
    )
    if supports_skip_locked(session):
        query = query.with_for_update(skip_locked=True)
    began = time.perf_counter()
    rows = session.execute(query).all()
    selecting = time.perf_counter() - began
    if not rows:
        return 0, 0, floor, selecting
    # Re-checked: never delete a record that is not expired, whatever happened
    # to it since it was selected (SQLite selects without a lock).
    began = time.perf_counter()
    result = cast(
        CursorResult[Any],
        session.execute(
            delete(table).where(table.c.id.in_([r.id for r in rows]), expired(table, cutoff))
        ),
    )
    slowest = max(selecting, time.perf_counter() - began)
    return len(rows), result.rowcount, rows[-1].expires_at, slowest


def purge(
    bind: Engine,
    *,
    settings: Settings | None = None,
    older_than: timedelta = timedelta(0),
    dry_run: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> PurgeResult:
    """Delete expired tasks, then expired operations, in short batches.

    :param settings: the knobs it reads (default :class:`~tasktoolkit.Settings()`):
        ``batch_size``, the most rows per batch: one select and one delete, in a
        transaction of their own (the first batch takes at most 100 rows; then
        a statement over 50 ms shrinks the next batches, at least by half, down
        to 10 rows, and quick ones grow them back by half, up to ``batch_size``,
        so statements stay short on a slow, busy or cold database);
        ``deadline``, the time each transaction (and a dry run's count) may
        take (one whose database does not answer in time is given up and run
        once more on a fresh connection, then raises SQLAlchemy's
        ``OperationalError``); ``retryable``, more errors on which a batch is
        run again (see :func:`tasktoolkit.orm._retry.is_retryable`).
    :param older_than: only records that expired at least this long ago
        (``expires_at <= now - older_than``, on the database's clock).
    :param dry_run: count only; nothing is deleted.
    :param progress: called after every batch with ``("tasks" or "operations",
        rows deleted so far from that table)``.
    """
    settings = settings_or_default(settings)
    older_than = _check_older_than(older_than)
    batch_size, retryable = settings.batch_size, settings.retryable
    seconds = settings.deadline_seconds
    sessions = short_sessions(bind)
    started = time.perf_counter()
    cutoff = in_transaction(
        sessions,
        lambda s: read_now(s.connection()) - older_than,
        seconds=seconds,
        predicate=retryable,
    )
    if dry_run:
        tasks, operations = _count_expired(sessions, cutoff, seconds)
        return PurgeResult(tasks, operations, cutoff, True, time.perf_counter() - started)
    hooks = hooks_of(bind)
    totals: dict[str, int] = {}
    for kind, table in (("tasks", tasks_table), ("operations", operations_table)):
        total = 0
        size = min(batch_size, _FIRST_BATCH)
        floor: datetime | None = None
        while True:
            batch = partial(_purge_batch, table=table, cutoff=cutoff, size=size, floor=floor)
            selected, deleted, floor, slowest = in_transaction(
                sessions, batch, seconds=seconds, predicate=retryable
            )
            total += deleted
            if deleted and hooks:
                hooks.happened(Event("purged", count=deleted, reason=kind))
            if progress is not None:
                progress(kind, total)
            # Fewer than a batch: the rest is gone, or locked by another purge
            # (SKIP LOCKED), which deletes it.
            if selected < size:
                break
            size = _next_batch_size(size, slowest, batch_size)
        totals[kind] = total
    seconds = time.perf_counter() - started
    return PurgeResult(totals["tasks"], totals["operations"], cutoff, False, seconds)
