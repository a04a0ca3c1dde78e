"""Lifespan: when records expire, purging expired ones, reaping lost workers' tasks.

Purge
-----
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

Reaper
------
:func:`reap` finds ``running`` tasks whose last heartbeat is older than their
own ``heartbeat_timeout`` and, in one compare-and-set per task that re-checks
the same condition (a worker that heartbeats in between keeps its task):

- cancels it when cancellation had been asked (nobody is left to stop);
- re-queues it (back to ``pending``, host cleared) while ``attempts <
  max_attempts``; this ``running -> pending`` move is the reaper's alone and
  is not in :data:`~tasktoolkit.orm.states.TRANSITIONS`;
- otherwise fails it with error code ``worker_lost``.

Operation counts move with each task, and an operation whose last task this
finishes is finished too.

Example::

    purge(engine, older_than=timedelta(days=1), batch_size=1000)
    reap(engine)
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Table, delete, func, literal, literal_column, select, update
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from tasktoolkit.errors import InvalidDurationError
from tasktoolkit.orm._events import queue_operation_finished, queue_task_change
from tasktoolkit.orm._retry import retrying
from tasktoolkit.orm._types import UTCDateTime, utcnow
from tasktoolkit.orm.engine import prepare_engine
from tasktoolkit.orm.expiry import MAX_TTL
from tasktoolkit.orm.operations import count_task_transition
from tasktoolkit.orm.records import operations_table, tasks_table
from tasktoolkit.orm.resource import expiry_policy_for
from tasktoolkit.orm.states import TaskState
from tasktoolkit.orm.workers import supports_skip_locked
from tasktoolkit.signals import TaskChange

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_BATCH_SIZE",
    "WORKER_LOST",
    "PurgeResult",
    "ReapResult",
    "count_expired",
    "expired",
    "parse_duration",
    "purge",
    "reap",
    "reap_lost_tasks",
]

DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 10000
#: The error code of a task whose worker stopped heartbeating.
WORKER_LOST = "worker_lost"

#: How long one purge batch (select, delete, commit) should take at most.
_BATCH_TARGET_S = 0.1
_MIN_BATCH = 10
_T = tasks_table
_R = TypeVar("_R")
_DURATION = re.compile(r"(\d+)\s*(w|d|h|m|s)", re.IGNORECASE)
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """A duration such as ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` or ``1d12h``.

    :raises InvalidDurationError: not of that form, or longer than ten years.

    Example::

        >>> parse_duration("1d12h")
        datetime.timedelta(days=1, seconds=43200)
    """
    value = text.strip() if isinstance(text, str) else ""
    parts = _DURATION.findall(value)
    if not value or _DURATION.sub("", value).strip():
        raise InvalidDurationError(
            f"{text!r} is not a duration (write it like 90s, 15m, 12h, 7d, 2w or 1d12h)"
        )
    seconds = sum(int(n) * _UNITS[unit.lower()] for n, unit in parts)
    if seconds > MAX_TTL.total_seconds():
        raise InvalidDurationError(f"{text!r} is longer than {MAX_TTL.days} days")
    return timedelta(seconds=seconds)


def _check_batch_size(batch_size: object) -> int:
    if (
        not isinstance(batch_size, int)
        or isinstance(batch_size, bool)
        or not 1 <= batch_size <= MAX_BATCH_SIZE
    ):
        raise ValueError(
            f"batch size must be an integer from 1 to {MAX_BATCH_SIZE}: {batch_size!r}"
        )
    return batch_size


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


@dataclass(frozen=True, slots=True)
class ReapResult:
    """The ids of the lost tasks the reaper moved, by what it did with them."""

    failed: tuple[str, ...] = ()
    requeued: tuple[str, ...] = ()
    cancelled: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """How many tasks were moved."""
        return len(self.failed) + len(self.requeued) + len(self.cancelled)

    def __add__(self, other: ReapResult) -> ReapResult:
        return ReapResult(
            self.failed + other.failed,
            self.requeued + other.requeued,
            self.cancelled + other.cancelled,
        )


@contextmanager
def _short_transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        if engine.dialect.name in ("mysql", "mariadb"):
            # READ COMMITTED: no gap locks on the expires_at index, so a purge
            # never holds up a worker finishing (and so timestamping) a task.
            conn = conn.execution_options(isolation_level="READ COMMITTED")
        with conn.begin():
            yield conn


def _retrying(engine: Engine, work: Callable[..., _R], *args: Any) -> _R:
    def transaction() -> _R:
        with _short_transaction(engine) as conn:
            return work(conn, *args)

    return retrying(transaction)


def count_expired(
    bind: Engine, *, older_than: timedelta = timedelta(0), now: datetime | None = None
) -> PurgeResult:
    """How many tasks and operations :func:`purge` would remove now (writes nothing)."""
    cutoff = _cutoff(older_than, now)
    engine = prepare_engine(bind)
    with engine.connect() as conn:
        tasks, operations = (
            conn.execute(select(func.count()).select_from(t).where(expired(t, cutoff))).scalar_one()
            for t in (tasks_table, operations_table)
        )
    return PurgeResult(tasks=tasks, operations=operations, dry_run=True)


def _purge_batch(
    conn: Connection, table: Table, cutoff: datetime, batch_size: int, floor: datetime | None
) -> tuple[int, int, datetime | None]:
    """Delete up to ``batch_size`` expired rows from ``floor`` on.

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
        .limit(batch_size)
    )
    if supports_skip_locked(conn.engine):
        query = query.with_for_update(skip_locked=True)
    rows = conn.execute(query).all()
    if not rows:
        return 0, 0, floor
    # Re-checked: never delete a record that is not expired, whatever happened
    # to it since it was selected (SQLite selects without a lock).
    result = cast(
        CursorResult[Any],
        conn.execute(
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
) -> PurgeResult:
    """Delete expired tasks, then expired operations, in short batches.

    :param older_than: only records that expired at least this long ago
        (``expires_at <= now - older_than``).
    :param batch_size: the most rows per batch (1..10000): one select and one
        delete, in a transaction of their own. A batch that takes longer than
        0.1 s halves the size of the next ones (down to 10); quick ones grow it
        back, so statements stay short on a slow or busy database.
    :param dry_run: count only (see :func:`count_expired`); nothing is deleted.
    :param now: the purge's notion of now (default: the current time).
    :param progress: called after every batch with ``("tasks" or "operations",
        rows deleted so far from that table)``.
    """
    batch_size = _check_batch_size(batch_size)
    cutoff = _cutoff(older_than, now)
    engine = prepare_engine(bind)
    started = time.perf_counter()
    if dry_run:
        counted = count_expired(engine, now=cutoff)
        return PurgeResult(counted.tasks, counted.operations, True, time.perf_counter() - started)
    totals: dict[str, int] = {}
    for kind, table in (("tasks", tasks_table), ("operations", operations_table)):
        total = 0
        size = batch_size
        floor: datetime | None = None
        while True:
            began = time.perf_counter()
            selected, deleted, floor = _retrying(engine, _purge_batch, table, cutoff, size, floor)
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


# -- the reaper ----------------------------------------------------------------


def _lost(dialect: str, now: datetime) -> ColumnElement[bool]:
    """``running`` and no heartbeat for longer than the task's own timeout, in SQL."""
    seen: Any = func.coalesce(_T.c.heartbeat_at, _T.c.started_at, _T.c.updated_at)
    moment = literal(now, UTCDateTime())
    if dialect == "postgresql":
        deadline: Any = seen + func.make_interval(0, 0, 0, 0, 0, 0, _T.c.heartbeat_timeout)
        condition = deadline < moment
    elif dialect in ("mysql", "mariadb"):
        condition = (
            func.timestampadd(literal_column("SECOND"), _T.c.heartbeat_timeout, seen) < moment
        )
    else:  # SQLite keeps datetimes as ISO text; julianday() reads them as days
        condition = func.julianday(seen) + _T.c.heartbeat_timeout / 86400.0 < func.julianday(moment)
    return cast(ColumnElement[bool], condition)


def reap_lost_tasks(
    session: Session, *, now: datetime | None = None, limit: int = 500
) -> ReapResult:
    """Move up to ``limit`` lost tasks (see the module docs); no commit.

    Tasks loaded in ``session`` are not refreshed; expire them to see the moves.
    """
    limit = _check_batch_size(limit)
    moment = now or utcnow()
    dialect = session.get_bind().dialect.name
    lost = _lost(dialect, moment)
    query = (
        select(
            _T.c.id,
            _T.c.request_id,
            _T.c.resource_type,
            _T.c.resource_id,
            _T.c.name,
            _T.c.host,
            _T.c.attempts,
            _T.c.max_attempts,
            _T.c.heartbeat_timeout,
            _T.c.cancel_requested,
        )
        .where(_T.c.state == TaskState.RUNNING.value, lost)
        .order_by(_T.c.created_at, _T.c.id)
        .limit(limit)
    )
    if supports_skip_locked(session):
        query = query.with_for_update(skip_locked=True)
    moved: dict[TaskState, list[str]] = {s: [] for s in TaskState}
    for row in session.execute(query).all():
        values: dict[str, Any] = {"state": None, "updated_at": moment}
        why = f"worker {row.host} sent no heartbeat for {row.heartbeat_timeout} s"
        if row.cancel_requested:
            target = TaskState.CANCELLED
            values["message"] = f"{why}; cancelled as requested"
        elif row.attempts < row.max_attempts:
            target = TaskState.PENDING
            values.update(
                host=None,
                heartbeat_at=None,
                started_at=None,
                message=f"{why}; re-queued (attempt {row.attempts} of {row.max_attempts} lost)",
            )
        else:
            target = TaskState.FAILED
            values.update(error_code=WORKER_LOST, error_message=why, error_traceback=None)
        values["state"] = target.value
        if target != TaskState.PENDING:
            values["finished_at"] = moment
            values["expires_at"] = expiry_policy_for(row.resource_type).expires_at(
                moment, row.name, target.value
            )
        result = cast(
            CursorResult[Any],
            session.execute(
                update(_T)
                .where(_T.c.id == row.id, _T.c.state == TaskState.RUNNING.value, lost)
                .values(values),
                execution_options={"synchronize_session": False},
            ),
        )
        if result.rowcount != 1:
            continue  # it heartbeated or finished since it was selected: not lost
        if row.request_id is not None:
            queue_operation_finished(
                session,
                count_task_transition(
                    session.connection(),
                    row.request_id,
                    TaskState.RUNNING.value,
                    target.value,
                    now=moment,
                ),
            )
        queue_task_change(
            session,
            TaskChange(
                row.id,
                row.request_id,
                row.resource_type,
                row.resource_id,
                row.name,
                TaskState.RUNNING.value,
                target.value,
            ),
        )
        moved[target].append(row.id)
    return ReapResult(
        tuple(moved[TaskState.FAILED]),
        tuple(moved[TaskState.PENDING]),
        tuple(moved[TaskState.CANCELLED]),
    )


def reap(bind: Engine, *, now: datetime | None = None, batch_size: int = 500) -> ReapResult:
    """Move every lost task (see the module docs), committing each batch.

    :returns: the ids moved, by what was done with them.
    """
    batch_size = _check_batch_size(batch_size)
    engine = prepare_engine(bind)
    if engine.dialect.name in ("mysql", "mariadb"):
        engine = engine.execution_options(isolation_level="READ COMMITTED")
    total = ReapResult()

    def batch() -> ReapResult:
        with Session(engine) as session, session.begin():
            return reap_lost_tasks(session, now=now, limit=batch_size)

    while True:
        moved = retrying(batch)
        total += moved
        if moved.total < batch_size:
            return total
