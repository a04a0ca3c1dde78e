"""The reaper: what no worker or request will finish, it finishes.

Nothing stays active for ever: every active record has a deadline, and
:func:`reap` enforces them all, on the database's clock (never the reaper
host's: see :mod:`tasktoolkit.orm._clock`), in this order:

- a ``running`` task whose last heartbeat is older than its own
  ``heartbeat_timeout`` is taken from its worker (:func:`reap_lost`):
  cancelled when cancellation had been asked, re-queued after its backoff
  while its attempts allow, else failed with error code ``worker_lost``;
- a ``pending`` task past its ``start_deadline`` (its name's start timeout,
  from the moment it became ready) is failed with code ``not_started``
  (:func:`fail_not_started`);
- an operation whose request has not recorded its end by its
  ``request_deadline`` has its request ended: its state then follows its
  tasks, ``failed`` with code ``request_lost`` when it has none;
- an operation whose active tasks vanished with their resource is settled;
- the rows of workers that stopped beating leave the list of live workers
  (:mod:`tasktoolkit.orm._registry`), where each pass of a reaper beats too
  (``<hostname>:<pid>:reaper``, live until it misses two passes).

An outage takes no task from a healthy worker: while the database is away no
worker can heartbeat, and when it comes back every heartbeat looks old. So
the reapers keep a *watch* in the database (``tasktoolkit_reaper_watch``):
every pass records when it looked, and a pass that finds the last look older
than twice ``reap_every`` (a setting) and a second (the database was out of
every reaper's sight, or no reaper ran) starts the watch anew. A worker is
called lost only when both its last heartbeat and the watch are older than its
heartbeat timeout, so after an outage each worker has its whole timeout to
heartbeat again. Run reapers at least every ``reap_every``; an outage shorter
than that allowance is not seen, so keep it under the shortest heartbeat
timeout less the time between two heartbeats.

Each move goes through the same compare-and-set as every other move of a
task or operation (so a worker that heartbeats, or a request that ends, in
between keeps what it has), in short transactions of ``batch_size`` rows (a
setting) at most, selected with ``SKIP LOCKED`` where the database has it: any
number of reapers can run at once, and each row is moved once. Every query is served by
an index on rows that are still active, so a pass that finds nothing costs a
few statements however many finished rows the tables hold.

Example::

    result = reap(engine, settings=Settings(reap_every="10s"))   # from a loop, every 10 s
    result.failed, result.requeued, result.not_started, result.requests
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import timedelta
from functools import partial
from typing import Any, cast

from sqlalchemy import Float, bindparam, case, func, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement

from tasktoolkit.errors import TaskToolkitError
from tasktoolkit.hooks import Event, Hooks, hooks_of
from tasktoolkit.orm._clock import db_now, later
from tasktoolkit.orm._deadline import deadline as within
from tasktoolkit.orm._engine import supports_skip_locked
from tasktoolkit.orm._events import queue_operation_finished
from tasktoolkit.orm._operations import (
    check_request_timeout,
    end_lost_request,
    lost_requests,
    orphaned_operations,
    settle_operation,
)
from tasktoolkit.orm._records import reaper_watch_table as _W
from tasktoolkit.orm._records import tasks_table as _T
from tasktoolkit.orm._registry import Announcement, beat, purge_gone
from tasktoolkit.orm._retry import RetryPredicate, in_transaction, short_sessions
from tasktoolkit.orm._states import TaskState
from tasktoolkit.orm._transitions import (
    NOT_STARTED,
    WORKER_LOST,
    fail_not_started,
    reap_lost,
)
from tasktoolkit.settings import Settings, settings_or_default

__all__ = ["NOT_STARTED", "REAP_REASONS", "WORKER_LOST", "ReapResult", "reap"]

#: Why the reaper moves rows, as its ``reaped`` events say (``Event.reason``): a
#: lost worker's task (failed, re-queued or cancelled), a task not started by its
#: deadline, a request that never recorded its end, an operation whose tasks
#: vanished with their resource.
REAP_REASONS = (WORKER_LOST, NOT_STARTED, "request_lost", "orphaned")

#: The one watch all reapers share.
_WATCH = "reapers"
#: Seconds a pass may come late, beyond twice ``reap_every``, without breaking the watch (a
#: busy host schedules a reaper's thread late; a shorter outage costs no worker anything).
_SLACK = 1.0


@dataclass(frozen=True, slots=True)
class ReapResult:
    """What the reaper did: the ids it moved, by what it did with them.

    :param failed: lost tasks failed with ``worker_lost``.
    :param requeued: lost tasks put back to ``pending`` for another attempt.
    :param cancelled: lost tasks whose cancellation had been asked.
    :param operations: operations settled because their active tasks
        vanished with their resource.
    :param not_started: pending tasks failed with ``not_started``.
    :param requests: operations whose request never recorded its end, ended.
    """

    failed: tuple[str, ...] = ()
    requeued: tuple[str, ...] = ()
    cancelled: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()
    not_started: tuple[str, ...] = ()
    requests: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """How many tasks were moved."""
        return len(self.failed) + len(self.requeued) + len(self.cancelled) + len(self.not_started)

    def __add__(self, other: ReapResult) -> ReapResult:
        return ReapResult(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def _watch(dialect: str) -> Insert:
    """Record a reaper's look: the watch goes on, or, after a gap longer than
    ``tt_gap`` seconds since the last look, starts anew; one statement."""
    gap = bindparam("tt_gap", type_=Float())
    row = {"name": _WATCH, "since": db_now(), "seen_at": db_now()}
    if dialect in ("mysql", "mariadb"):
        upsert_mysql = mysql.insert(_W).values(row)
        # In this order: ``since`` reads the last look before it is overwritten.
        return upsert_mysql.on_duplicate_key_update(
            [
                ("since", case((_W.c.seen_at < later(db_now(), -gap), db_now()), else_=_W.c.since)),
                ("seen_at", db_now()),
            ]
        )
    upsert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_W).values(row)
    return upsert.on_conflict_do_update(
        index_elements=[_W.c.name],
        set_={
            "since": case((_W.c.seen_at < later(db_now(), -gap), db_now()), else_=_W.c.since),
            "seen_at": db_now(),
        },
    )


_WATCHES = {name: _watch(name) for name in ("postgresql", "sqlite", "mysql")}
#: The reapers' last recorded look, and the database's now.
_LAST_LOOK = select(_W.c.seen_at, db_now()).where(_W.c.name == _WATCH)
#: When the reapers' current watch began.
_WATCHED_SINCE = select(_W.c.since).where(_W.c.name == _WATCH).scalar_subquery()


def _lost() -> ColumnElement[bool]:
    """Silent for longer than its own heartbeat timeout, and watched that long (see the
    module docs), on the database's clock (as :func:`reap_lost` decides)."""
    seen: Any = func.coalesce(_T.c.heartbeat_at, _T.c.started_at, _T.c.updated_at)
    timeout = _T.c.heartbeat_timeout
    return cast(
        ColumnElement[bool],
        (later(seen, timeout) < db_now()) & (later(_WATCHED_SINCE, timeout) <= db_now()),
    )


def _candidates(
    session: Session, where: ColumnElement[bool], order: list[Any], limit: int
) -> list[str]:
    """Up to ``limit`` task ids matching ``where``, locked for this transaction.

    ``order`` is the order of the index that serves ``where``, so the scan
    stops (and stops locking) at ``limit``. Returned in the order of their
    operations, so that reapers running at once take the operations' row
    locks (for the counts) in the same order.
    """
    query = select(_T.c.id, _T.c.request_id).where(where).order_by(*order).limit(limit)
    if supports_skip_locked(session):
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query).all()
    return [row.id for row in sorted(rows, key=lambda r: (r.request_id or "", r.id))]


def _moved(session: Session, ids: list[str], move: Callable[[str], Any]) -> list[tuple[str, str]]:
    """``move`` each task; the ``(id, new state)`` of those it moved."""
    moved = []
    for task_id in ids:
        try:
            task = move(task_id)
        except TaskToolkitError:
            continue  # moved by its worker, another reaper or an API call since: not ours
        moved.append((task_id, task.state))
    return moved


def _look(session: Session, every: timedelta) -> None:
    """Record a reaper's look in the watch, when the last one recorded is older than half
    of ``every``: a read each pass, a write now and then (on SQLite a write takes the
    file's one writer's lock from the workers)."""
    last = session.execute(_LAST_LOOK).one_or_none()
    if last is not None and last[1] - last[0] < every / 2:
        return
    dialect = session.get_bind().dialect.name
    statement = _WATCHES["mysql" if dialect == "mariadb" else dialect]
    session.execute(statement, {"tt_gap": 2 * every.total_seconds() + _SLACK})


def _reaper_beat(session: Session, every: timedelta) -> None:
    """This reaper beats in the list of workers (live until it misses two passes), and
    the rows of workers that are not live any more go."""
    timeout = math.ceil(2 * every.total_seconds() + _SLACK)
    me = f"{socket.gethostname()}:{os.getpid()}:reaper"
    beat(session.connection(), Announcement(me, "reaper", (), (), timeout))
    purge_gone(session.connection())


def _lost_batch(session: Session, *, limit: int, watch: timedelta | None) -> ReapResult:
    """One batch of lost workers' tasks; the first of a pass (``watch``: how often reapers
    run) records the reapers' look and this reaper's beat first."""
    if watch is not None:
        _look(session, watch)
        _reaper_beat(session, watch)
    running = _T.c.state == TaskState.RUNNING.value
    ids = _candidates(session, running & _lost(), [_T.c.created_at, _T.c.id], limit)
    moved = _moved(session, ids, lambda task_id: reap_lost(session, task_id))
    by_state = {s: tuple(i for i, state in moved if state == s) for s in TaskState}
    result = ReapResult(
        failed=by_state[TaskState.FAILED],
        requeued=by_state[TaskState.PENDING],
        cancelled=by_state[TaskState.CANCELLED],
    )
    return result


def _not_started_batch(
    session: Session, *, limit: int, start_timeout: timedelta | None
) -> ReapResult:
    overdue = _T.c.start_deadline <= db_now()
    if start_timeout is not None:
        spawned_before = later(db_now(), -start_timeout)
        # Not one waiting on prerequisites: its time counts from when it becomes ready.
        never_ready = _T.c.not_before.is_(None) & (_T.c.waiting_on == 0)
        overdue = overdue | (never_ready & (_T.c.created_at <= spawned_before))
    pending = _T.c.state == TaskState.PENDING.value
    ids = _candidates(session, pending & overdue, [_T.c.start_deadline], limit)
    moved = _moved(
        session,
        ids,
        lambda task_id: fail_not_started(session, task_id, start_timeout=start_timeout),
    )
    return ReapResult(not_started=tuple(i for i, _ in moved))


def _requests_batch(
    session: Session, *, limit: int, request_timeout: timedelta | None
) -> ReapResult:
    connection = session.connection()
    ids = lost_requests(connection, limit=limit, request_timeout=request_timeout)
    ended = []
    for operation_id in ids:
        done, change = end_lost_request(connection, operation_id, request_timeout=request_timeout)
        queue_operation_finished(session, change)
        if done:
            ended.append(operation_id)
    return ReapResult(requests=tuple(ended))


def _settle(session: Session, *, operation_id: str) -> ReapResult:
    change = settle_operation(session.connection(), operation_id)
    queue_operation_finished(session, change)
    return ReapResult(operations=() if change is None else (operation_id,))


_Batch = Callable[[Session], ReapResult]


def _drain(
    sessions: sessionmaker[Session],
    batch: Callable[[bool], _Batch],
    seconds: float | None,
    retryable: RetryPredicate | None,
    hooks: Hooks,
) -> ReapResult:
    """Run ``batch`` (told whether it is the first) in transactions of its own until
    one moves nothing.

    Not until one finds fewer rows than its limit: another reaper's locks
    make a batch find fewer while more rows are left.
    """
    total = ReapResult()
    first = True
    while True:
        result = in_transaction(sessions, batch(first), seconds=seconds, predicate=retryable)
        first = False
        if result == ReapResult():
            return total
        _announce(hooks, result)
        total += result


def _announce(hooks: Hooks, result: ReapResult) -> None:
    """Tell the hooks what a committed batch did: ``reaped`` events, by reason."""
    if not hooks:
        return
    lost = len(result.failed) + len(result.requeued) + len(result.cancelled)
    counts = (lost, len(result.not_started), len(result.requests), len(result.operations))
    for reason, count in zip(REAP_REASONS, counts, strict=True):
        if count:
            hooks.happened(Event("reaped", count=count, reason=reason))


def reap(
    bind: Engine,
    *,
    settings: Settings | None = None,
    request_timeout: timedelta | None = None,
    start_timeout: timedelta | None = None,
) -> ReapResult:
    """Enforce every deadline of active tasks and operations (see the module docs).

    :param settings: the knobs it reads (default :class:`~tasktoolkit.Settings()`):
        ``batch_size``, the most tasks (or operations) looked at per transaction;
        ``reap_every``, how often reapers run (from a loop, cron, a timer): a pass
        that finds the reapers' last look older than twice this and a second
        starts their watch anew, and no worker is called lost before the watch
        has lasted its heartbeat timeout (see the module docs); ``deadline``, the
        time each transaction may take (one whose database does not answer in
        time is given up and run once more on a fresh connection, then raises
        SQLAlchemy's ``OperationalError``); ``retryable``, more errors on which a
        batch is run again (see :func:`tasktoolkit.orm._retry.is_retryable`).
        The hooks told of each batch are the engine's (a toolkit puts its
        settings' hooks there).
    :param request_timeout: also end the requests that started longer ago
        than this, whatever the request timeout they were opened with.
    :param start_timeout: also fail the tasks pending since their spawn for
        longer than this, whatever their name's start timeout.
    :returns: the ids moved, by what was done with them.
    """
    settings = settings_or_default(settings)
    if request_timeout is not None:
        check_request_timeout(request_timeout)
    if start_timeout is not None:
        check_request_timeout(start_timeout, "start_timeout")
    limit, every = settings.batch_size, settings.reap_every
    seconds, retryable = settings.deadline_seconds, settings.retryable
    sessions = short_sessions(bind)

    def lost(first: bool) -> _Batch:
        return partial(_lost_batch, limit=limit, watch=every if first else None)

    def not_started(first: bool) -> _Batch:
        return partial(_not_started_batch, limit=limit, start_timeout=start_timeout)

    def requests(first: bool) -> _Batch:
        return partial(_requests_batch, limit=limit, request_timeout=request_timeout)

    hooks = hooks_of(bind)
    total = ReapResult()
    for batch in (lost, not_started, requests):
        total += _drain(sessions, batch, seconds, retryable, hooks)
    with within(seconds), sessions() as session:
        orphans = orphaned_operations(session.connection(), limit=limit)
    for operation_id in orphans:
        settled = in_transaction(
            sessions,
            partial(_settle, operation_id=operation_id),
            seconds=seconds,
            predicate=retryable,
        )
        _announce(hooks, settled)
        total += settled
    return total
