"""The reaper: what no worker or request will finish, it finishes.

Nothing stays active for ever: every active record has a deadline, and
:func:`reap` enforces them all, in this order:

- a ``running`` task whose last heartbeat is older than its own
  ``heartbeat_timeout`` is taken from its worker (:func:`reap_lost`):
  cancelled when cancellation had been asked, re-queued after its backoff
  while its attempts allow, else failed with error code ``worker_lost``;
- a ``pending`` task past its ``start_deadline`` (its name's start timeout)
  is failed with code ``not_started`` (:func:`fail_not_started`);
- an operation whose request has not recorded its end by its
  ``request_deadline`` has its request ended: its state then follows its
  tasks, ``failed`` with code ``request_lost`` when it has none;
- an operation whose active tasks vanished with their resource is settled.

Each move goes through the same compare-and-set as every other move of a
task or operation (so a worker that heartbeats, or a request that ends, in
between keeps what it has), in short transactions of ``batch_size`` rows at
most, selected with ``SKIP LOCKED`` where the database has it: any number of
reapers can run at once, and each row is moved once. Every query is served by
an index on rows that are still active, so a pass that finds nothing costs a
few statements however many finished rows the tables hold.

Example::

    result = reap(engine)
    result.failed, result.requeued, result.not_started, result.requests
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast

from sqlalchemy import func, literal, literal_column, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from tasktoolkit.errors import TaskToolkitError
from tasktoolkit.hooks import Event, Hooks, hooks_of
from tasktoolkit.orm._deadline import DEFAULT_DEADLINE, check_deadline
from tasktoolkit.orm._deadline import deadline as within
from tasktoolkit.orm._engine import supports_skip_locked
from tasktoolkit.orm._events import queue_operation_finished
from tasktoolkit.orm._lifespan import check_batch_size
from tasktoolkit.orm._operations import (
    check_request_timeout,
    end_lost_request,
    lost_requests,
    orphaned_operations,
    settle_operation,
)
from tasktoolkit.orm._records import tasks_table as _T
from tasktoolkit.orm._retry import RetryPredicate, in_transaction, short_sessions
from tasktoolkit.orm._states import TaskState
from tasktoolkit.orm._transitions import (
    NOT_STARTED,
    WORKER_LOST,
    fail_not_started,
    reap_lost,
)
from tasktoolkit.orm._types import UTCDateTime, utcnow

__all__ = ["NOT_STARTED", "REAP_REASONS", "WORKER_LOST", "ReapResult", "reap"]

#: Why the reaper moves rows, as its ``reaped`` events say (``Event.reason``): a
#: lost worker's task (failed, re-queued or cancelled), a task not started by its
#: deadline, a request that never recorded its end, an operation whose tasks
#: vanished with their resource.
REAP_REASONS = (WORKER_LOST, NOT_STARTED, "request_lost", "orphaned")


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


def _lost(dialect: str, now: datetime) -> ColumnElement[bool]:
    """No heartbeat for longer than the task's own timeout, in SQL (as :func:`reap_lost`)."""
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


def _lost_batch(session: Session, *, now: datetime, limit: int) -> ReapResult:
    lost = _lost(session.get_bind().dialect.name, now)
    running = _T.c.state == TaskState.RUNNING.value
    ids = _candidates(session, running & lost, [_T.c.created_at, _T.c.id], limit)
    moved = _moved(session, ids, lambda task_id: reap_lost(session, task_id, now=now))
    by_state = {s: tuple(i for i, state in moved if state == s) for s in TaskState}
    result = ReapResult(
        failed=by_state[TaskState.FAILED],
        requeued=by_state[TaskState.PENDING],
        cancelled=by_state[TaskState.CANCELLED],
    )
    return result


def _not_started_batch(
    session: Session, *, now: datetime, limit: int, started_before: datetime | None
) -> ReapResult:
    overdue = _T.c.start_deadline <= now
    if started_before is not None:
        overdue = overdue | (_T.c.not_before.is_(None) & (_T.c.created_at <= started_before))
    pending = _T.c.state == TaskState.PENDING.value
    ids = _candidates(session, pending & overdue, [_T.c.start_deadline], limit)
    moved = _moved(
        session,
        ids,
        lambda task_id: fail_not_started(session, task_id, now=now, started_before=started_before),
    )
    return ReapResult(not_started=tuple(i for i, _ in moved))


def _requests_batch(
    session: Session, *, now: datetime, limit: int, request_timeout: timedelta | None
) -> ReapResult:
    connection = session.connection()
    ids = lost_requests(connection, now=now, limit=limit, request_timeout=request_timeout)
    ended = []
    for operation_id in ids:
        done, change = end_lost_request(
            connection, operation_id, now=now, request_timeout=request_timeout
        )
        queue_operation_finished(session, change)
        if done:
            ended.append(operation_id)
    return ReapResult(requests=tuple(ended))


def _settle(session: Session, *, operation_id: str, now: datetime) -> ReapResult:
    change = settle_operation(session.connection(), operation_id, now)
    queue_operation_finished(session, change)
    return ReapResult(operations=() if change is None else (operation_id,))


_Batch = Callable[[Session], ReapResult]


def _drain(
    sessions: sessionmaker[Session],
    batch: Callable[[datetime], _Batch],
    now: datetime | None,
    seconds: float | None,
    retryable: RetryPredicate | None,
    hooks: Hooks,
) -> ReapResult:
    """Run ``batch`` in transactions of its own until one moves nothing.

    Not until one finds fewer rows than its limit: another reaper's locks
    make a batch find fewer while more rows are left.
    """
    total = ReapResult()
    while True:
        result = in_transaction(
            sessions, batch(now or utcnow()), seconds=seconds, predicate=retryable
        )
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
    now: datetime | None = None,
    batch_size: int = 500,
    request_timeout: timedelta | None = None,
    start_timeout: timedelta | None = None,
    deadline: float | None = DEFAULT_DEADLINE,
    retryable: RetryPredicate | None = None,
) -> ReapResult:
    """Enforce every deadline of active tasks and operations (see the module docs).

    :param batch_size: the most tasks (or operations) looked at per transaction.
    :param request_timeout: also end the requests that started longer ago
        than this, whatever the request timeout they were opened with.
    :param start_timeout: also fail the tasks pending since their spawn for
        longer than this, whatever their name's start timeout.
    :param deadline: seconds each transaction may take; one whose database does
        not answer in time is given up and run once more on a fresh connection,
        then raises SQLAlchemy's ``OperationalError``. ``None``: no limit.
    :param retryable: more errors on which a batch is run again (see
        :func:`tasktoolkit.orm._retry.is_retryable`).
    :returns: the ids moved, by what was done with them.
    """
    limit = check_batch_size(batch_size)
    if request_timeout is not None:
        check_request_timeout(request_timeout)
    if start_timeout is not None:
        check_request_timeout(start_timeout, "start_timeout")
    seconds = check_deadline(deadline)
    sessions = short_sessions(bind)

    def not_started(moment: datetime) -> _Batch:
        started_before = None if start_timeout is None else moment - start_timeout
        return partial(_not_started_batch, now=moment, limit=limit, started_before=started_before)

    def requests(moment: datetime) -> _Batch:
        return partial(_requests_batch, now=moment, limit=limit, request_timeout=request_timeout)

    def lost(moment: datetime) -> _Batch:
        return partial(_lost_batch, now=moment, limit=limit)

    hooks = hooks_of(bind)
    total = ReapResult()
    for batch in (lost, not_started, requests):
        total += _drain(sessions, batch, now, seconds, retryable, hooks)
    with within(seconds), sessions() as session:
        orphans = orphaned_operations(session.connection(), limit=limit)
    for operation_id in orphans:
        settled = in_transaction(
            sessions,
            partial(_settle, operation_id=operation_id, now=now or utcnow()),
            seconds=seconds,
            predicate=retryable,
        )
        _announce(hooks, settled)
        total += settled
    return total
