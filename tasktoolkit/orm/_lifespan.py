"""Lifespan: purging expired tasks and operations, in short batches.

:func:`purge` deletes tasks and operations whose ``expires_at`` has passed,
in batches: each batch selects up to ``batch_size`` ids through the
``expires_at`` index (``FOR UPDATE SKIP LOCKED`` where the database has it,
so two purges take different rows and neither waits for rows an API request
holds), then deletes exactly those ids, re-checking ``expires_at``, in its
own short transaction. No statement ever scans or locks more than one batch,
a purge never deletes a record that has not expired, and the counts it
reports are the rows its own ``DELETE`` statements removed (``rowcount``),
so two purges running at once never count a row twice.

``older_than`` narrows it to records that expired at least that long ago:
a record goes when ``expires_at <= now - older_than``.

Example::

    purge(engine, older_than=timedelta(days=1), batch_size=1000)
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

from tasktoolkit._checks import whole_number
from tasktoolkit.errors import InvalidDurationError
from tasktoolkit.orm._engine import supports_skip_locked
from tasktoolkit.orm._expiry import MAX_TTL
from tasktoolkit.orm._records import operations_table, tasks_table
from tasktoolkit.orm._retry import RetryPredicate, in_transaction, short_sessions
from tasktoolkit.orm._types import UTCDateTime, utcnow

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_BATCH_SIZE",
    "PurgeResult",
    "check_batch_size",
    "expired",
    "purge",
]

DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 10000

#: How long one purge batch (select, delete, commit) should take at most.
_BATCH_TARGET_S = 0.1
_MIN_BATCH = 10


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` if it is an integer from 1 to :data:`MAX_BATCH_SIZE`."""
    return whole_number(batch_size, "batch size", maximum=MAX_BATCH_SIZE)


def _cutoff(older_than: object, now: datetime | None) -> datetime:
    if not isinstance(older_than, timedelta):
        raise InvalidDurationError(f"older_than must be a timedelta, got {older_than!r}")
    if older_than < timedelta(0) or older_than > MAX_TTL:
        raise InvalidDurationError(f"older_than must be within 0 and {MAX_TTL.days} days")
    return (now or utcnow()) - older_than


def expired(table: Table, now: datetime | None = None) -> ColumnElement[bool]:
    """``expires_at <= now`` for the tasks or operations table: the records purge removes."""
    return table.c.expires_at <= literal(now or utcnow(), UTCDateTime())


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge removed (or, on a dry run, would remove)."""

    tasks: int
    operations: int
    dry_run: bool = False
    seconds: float = 0.0


def _count_expired(sessions: sessionmaker[Session], cutoff: datetime) -> tuple[int, int]:
    with sessions() as session:
        tasks, operations = (
            session.execute(
                select(func.count()).select_from(t).where(expired(t, cutoff))
            ).scalar_one()
            for t in (tasks_table, operations_table)
        )
    return tasks, operations


def _purge_batch(
    session: Session, *, table: Table, cutoff: datetime, size: int, floor: datetime | None
) -> tuple[int, int, datetime | None]:
    """Delete up to ``size`` expired rows from ``floor`` on.

    :returns: rows selected, rows deleted, and the floor of the next batch.
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
    rows = session.execute(query).all()
    if not rows:
        return 0, 0, floor
    # Re-checked: never delete a record that is not expired, whatever happened
    # to it since it was selected (SQLite selects without a lock).
    result = cast(
        CursorResult[Any],
        session.execute(
            delete(table).where(table.c.id.in_([r.id for r in rows]), expired(table, cutoff))
        ),
    )
    return len(rows), result.rowcount, rows[-1].expires_at


def purge(
    bind: Engine,
    *,
    older_than: timedelta = timedelta(0),
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    now: datetime | None = None,
    progress: Callable[[str, int], None] | None = None,
    retryable: RetryPredicate | None = None,
) -> PurgeResult:
    """Delete expired tasks, then expired operations, in short batches.

    :param older_than: only records that expired at least this long ago
        (``expires_at <= now - older_than``).
    :param batch_size: the most rows per batch (1..10000): one select and one
        delete, in a transaction of their own. A batch that takes longer than
        0.1 s halves the size of the next ones (down to 10); quick ones grow it
        back, so statements stay short on a slow or busy database.
    :param dry_run: count only; nothing is deleted.
    :param now: the purge's notion of now (default: the current time).
    :param progress: called after every batch with ``("tasks" or "operations",
        rows deleted so far from that table)``.
    :param retryable: more errors on which a batch is run again (see
        :func:`~tasktoolkit.orm.is_retryable`).
    """
    batch_size = check_batch_size(batch_size)
    cutoff = _cutoff(older_than, now)
    sessions = short_sessions(bind)
    started = time.perf_counter()
    if dry_run:
        tasks, operations = _count_expired(sessions, cutoff)
        return PurgeResult(tasks, operations, True, time.perf_counter() - started)
    totals: dict[str, int] = {}
    for kind, table in (("tasks", tasks_table), ("operations", operations_table)):
        total = 0
        size = batch_size
        floor: datetime | None = None
        while True:
            began = time.perf_counter()
            batch = partial(_purge_batch, table=table, cutoff=cutoff, size=size, floor=floor)
            selected, deleted, floor = in_transaction(sessions, batch, predicate=retryable)
            took = time.perf_counter() - began
            total += deleted
            if progress is not None:
                progress(kind, total)
            # Fewer than a batch: the rest is gone, or locked by another purge
            # (SKIP LOCKED), which deletes it.
            if selected < size:
                break
            # Keep every batch short whatever the database's speed: halve the
            # batch when one took too long, grow it back when they are quick.
            if took > _BATCH_TARGET_S:
                size = max(_MIN_BATCH, size // 2)
            elif took < _BATCH_TARGET_S / 4:
                size = min(batch_size, size * 2)
        totals[kind] = total
    return PurgeResult(totals["tasks"], totals["operations"], False, time.perf_counter() - started)
