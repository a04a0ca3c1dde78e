"""Stats per task name and queue: what waits, what runs, what failed, how long runs take.

For each ``(name, queue)`` with anything to say, :func:`task_stats` counts the
``pending`` and ``running`` tasks and the age of the oldest pending one, the
tasks that failed in the last hour by error code, and the 50th and 95th
percentiles of the run time of the attempts that ended in the last hour
(whatever their outcome). Ages and the hour are the database's clock.

Three statements, each served by an index, so their cost follows the active
tasks and the last hour's ends, not the history:

- the active tasks: ``ix_tasktoolkit_tasks_queue`` (state, queue, created_at,
  id, name, ...) carries every column read, for every project (a project's
  own: ``ix_tasktoolkit_tasks_project_state``);
- the last hour's failures: ``ix_tasktoolkit_tasks_finished`` (state, finished_at);
- the last hour's attempts: ``ix_tasktoolkit_task_attempts_finished``, each
  joined to its task by its primary key (for its name, queue and project).

Example::

    for row in task_stats(connection, scope=Scope(all_projects=True)):
        print(row.name, row.queue, row.pending, row.failed_last_hour)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import false, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from tasktoolkit.orm._clock import later, read_now
from tasktoolkit.orm._queries import Scope
from tasktoolkit.orm._records import attempts_table as _A
from tasktoolkit.orm._records import tasks_table as _T
from tasktoolkit.orm._states import TaskState

__all__ = ["WINDOW_SECONDS", "TaskStats", "percentile", "task_stats"]

#: The window of the recent figures: the last hour.
WINDOW_SECONDS = 3600


@dataclass(slots=True)
class TaskStats:
    """The figures of one task name on one queue (``None``: the default queue).

    :param oldest_pending_seconds: how long the oldest pending task has existed;
        ``None`` when none is pending.
    :param failed_last_hour: tasks that failed in the last hour, by error code.
    :param run_seconds_p50: the median run time of the attempts that ended in
        the last hour; ``None`` when none did (``p95`` likewise).
    """

    name: str
    queue: str | None
    pending: int = 0
    running: int = 0
    oldest_pending_seconds: float | None = None
    failed_last_hour: dict[str, int] = field(default_factory=dict)
    attempts_last_hour: int = 0
    run_seconds_p50: float | None = None
    run_seconds_p95: float | None = None


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile of ``values`` (``share`` in 0..1); ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def _scoped(scope: Scope) -> list[ColumnElement[bool]]:
    if scope.all_projects:
        return []
    if scope.project_id is None:
        return [false()]
    return [_T.c.project_id == scope.project_id]


def task_stats(connection: Connection, *, scope: Scope) -> list[TaskStats]:
    """The figures of every task name and queue with active tasks, or with failures or
    ended attempts in the last hour, by name then queue (the default queue first).

    :param scope: whose tasks count (an admin's: every project's).
    """
    now: datetime = read_now(connection)
    since = later(now, -WINDOW_SECONDS)
    where = _scoped(scope)
    found: dict[tuple[str, str | None], TaskStats] = {}

    def of(name: str, queue: str | None) -> TaskStats:
        key = (name, queue)
        if key not in found:
            found[key] = TaskStats(name, queue)
        return found[key]

    active = connection.execute(
        select(_T.c.name, _T.c.queue, _T.c.state, func.count(), func.min(_T.c.created_at))
        .where(_T.c.state.in_([TaskState.PENDING.value, TaskState.RUNNING.value]), *where)
        .group_by(_T.c.name, _T.c.queue, _T.c.state)
    )
    for name, queue, state, count, oldest in active:
        stats = of(name, queue)
        if state == TaskState.PENDING.value:
            stats.pending = count
            stats.oldest_pending_seconds = max(0.0, (now - oldest).total_seconds())
        else:
            stats.running = count
    failed = connection.execute(
        select(_T.c.name, _T.c.queue, _T.c.error_code, func.count())
        .where(_T.c.state == TaskState.FAILED.value, _T.c.finished_at >= since, *where)
        .group_by(_T.c.name, _T.c.queue, _T.c.error_code)
    )
    for name, queue, code, count in failed:
        of(name, queue).failed_last_hour[code or "error"] = count
    runs: dict[tuple[str, str | None], list[float]] = {}
    attempts = connection.execute(
        select(_T.c.name, _T.c.queue, _A.c.started_at, _A.c.finished_at)
        .select_from(_A.join(_T, _T.c.id == _A.c.task_id))
        .where(_A.c.finished_at >= since, _A.c.started_at.is_not(None), *where)
    )
    for name, queue, started, finished in attempts:
        runs.setdefault((name, queue), []).append(max(0.0, (finished - started).total_seconds()))
    for (name, queue), seconds in runs.items():
        stats = of(name, queue)
        stats.attempts_last_hour = len(seconds)
        stats.run_seconds_p50 = percentile(seconds, 0.5)
        stats.run_seconds_p95 = percentile(seconds, 0.95)
    return sorted(found.values(), key=lambda s: (s.name, s.queue is not None, s.queue or ""))
