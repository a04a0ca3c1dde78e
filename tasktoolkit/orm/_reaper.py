"""The reaper: what no worker or request will finish, it finishes.

:func:`reap` finds ``running`` tasks whose last heartbeat is older than their
own ``heartbeat_timeout`` and, in one compare-and-set per task that re-checks
the same condition (a worker that heartbeats in between keeps its task):

- cancels it when cancellation had been asked (nobody is left to stop);
- re-queues it (back to ``pending``, host cleared) while ``attempts <
  max_attempts``; this ``running -> pending`` move is the reaper's alone and
  is not in :data:`~tasktoolkit.orm._states.TRANSITIONS`;
- otherwise fails it with error code ``worker_lost``.

Operation counts move with each task, and an operation whose last task this
finishes is finished too. Then it settles the operations whose active tasks
vanished with their resource (see :mod:`tasktoolkit.orm._operations`).

Every batch is a short transaction of its own (``SKIP LOCKED`` where the
database has it), so any number of reapers can run at once.

Example::

    result = reap(engine)
    result.failed, result.requeued, result.cancelled, result.operations
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from functools import partial
from typing import Any, cast

from sqlalchemy import func, literal, literal_column, select, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from tasktoolkit.orm._deadline import DEFAULT_DEADLINE, check_deadline
from tasktoolkit.orm._deadline import deadline as within
from tasktoolkit.orm._engine import supports_skip_locked
from tasktoolkit.orm._events import queue_operation_finished, record_moves
from tasktoolkit.orm._lifespan import check_batch_size
from tasktoolkit.orm._operations import orphaned_operations, settle_operation
from tasktoolkit.orm._records import tasks_table as _T
from tasktoolkit.orm._resource import expiry_policy_for
from tasktoolkit.orm._retry import RetryPredicate, in_transaction, short_sessions
from tasktoolkit.orm._states import TaskState
from tasktoolkit.orm._types import UTCDateTime, utcnow
from tasktoolkit.signals import TaskChange

__all__ = ["WORKER_LOST", "ReapResult", "reap"]

#: The error code of a task whose worker stopped heartbeating.
WORKER_LOST = "worker_lost"


@dataclass(frozen=True, slots=True)
class ReapResult:
    """What the reaper did: the ids it moved, by what it did with them.

    :param failed: lost tasks failed with ``worker_lost``.
    :param requeued: lost tasks put back to ``pending`` for another attempt.
    :param cancelled: lost tasks whose cancellation had been asked.
    :param operations: operations finished because their active tasks
        vanished with their resource.
    """

    failed: tuple[str, ...] = ()
    requeued: tuple[str, ...] = ()
    cancelled: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """How many tasks were moved."""
        return len(self.failed) + len(self.requeued) + len(self.cancelled)

    def __add__(self, other: ReapResult) -> ReapResult:
        return ReapResult(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


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


def _fate(row: Any, now: datetime) -> tuple[TaskState, dict[str, Any]]:
    """What becomes of one lost task, and the columns that say so."""
    why = f"worker {row.host} sent no heartbeat for {row.heartbeat_timeout} s"
    if row.cancel_requested:
        return TaskState.CANCELLED, {"message": f"{why}; cancelled as requested"}
    if row.attempts < row.max_attempts:
        lost = f"attempt {row.attempts} of {row.max_attempts} lost"
        return TaskState.PENDING, {
            "host": None,
            "heartbeat_at": None,
            "started_at": None,
            "message": f"{why}; re-queued ({lost})",
        }
    return TaskState.FAILED, {
        "error_code": WORKER_LOST,
        "error_message": why,
        "error_traceback": None,
    }


def _reap_lost(session: Session, *, now: datetime, limit: int) -> ReapResult:
    """Move up to ``limit`` lost tasks; no commit."""
    lost = _lost(session.get_bind().dialect.name, now)
    query = (
        select(
            *(_T.c[name] for name in ("id", "request_id", "resource_type", "resource_id", "name")),
            *(_T.c[name] for name in ("host", "attempts", "max_attempts", "heartbeat_timeout")),
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
        target, values = _fate(row, now)
        values.update(state=target.value, updated_at=now)
        if target != TaskState.PENDING:
            policy = expiry_policy_for(row.resource_type)
            values.update(
                finished_at=now, expires_at=policy.expires_at(now, row.name, target.value)
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
        change = TaskChange(
            row.id,
            row.request_id,
            row.resource_type,
            row.resource_id,
            row.name,
            TaskState.RUNNING.value,
            target.value,
        )
        record_moves(session, [change], now=now)
        moved[target].append(row.id)
    return ReapResult(
        tuple(moved[TaskState.FAILED]),
        tuple(moved[TaskState.PENDING]),
        tuple(moved[TaskState.CANCELLED]),
    )


def _settle(session: Session, *, operation_id: str, now: datetime) -> ReapResult:
    change = settle_operation(session.connection(), operation_id, now)
    queue_operation_finished(session, change)
    return ReapResult(operations=() if change is None else (operation_id,))


def reap(
    bind: Engine,
    *,
    now: datetime | None = None,
    batch_size: int = 500,
    deadline: float | None = DEFAULT_DEADLINE,
    retryable: RetryPredicate | None = None,
) -> ReapResult:
    """Move every lost task and settle orphaned operations (see the module docs).

    :param batch_size: the most tasks (or operations) looked at per transaction.
    :param deadline: seconds each transaction may take; one whose database does
        not answer in time is given up and run once more on a fresh connection,
        then raises SQLAlchemy's ``OperationalError``. ``None``: no limit.
    :param retryable: more errors on which a batch is run again (see
        :func:`~tasktoolkit.orm.is_retryable`).
    :returns: the ids moved, by what was done with them.
    """
    batch_size = check_batch_size(batch_size)
    seconds = check_deadline(deadline)
    sessions = short_sessions(bind)
    total = ReapResult()
    while True:
        moment = now or utcnow()
        moved = in_transaction(
            sessions,
            partial(_reap_lost, now=moment, limit=batch_size),
            seconds=seconds,
            predicate=retryable,
        )
        total += moved
        if moved.total < batch_size:
            break
    with within(seconds), sessions() as session:
        orphans = orphaned_operations(session.connection(), limit=batch_size)
    for operation_id in orphans:
        total += in_transaction(
            sessions,
            partial(_settle, operation_id=operation_id, now=now or utcnow()),
            seconds=seconds,
            predicate=retryable,
        )
    return total
