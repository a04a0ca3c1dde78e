"""What a queue bridge writes and reads: tasks published, and tasks to publish (again).

A bridge publishes a task once it is committed ``pending`` (see
:mod:`tasktoolkit.orm._events`), then marks it published
(:func:`mark_published`). Its sweeper publishes what :func:`to_publish` finds:

- a task still ``pending`` and unmarked a while after it could run (the
  broker was down, the process died between the commit and the publish, or
  the task was re-queued by a process without the bridge);
- a task published but still ``pending`` its ``redeliver_after`` after its
  publish (and after its backoff): the broker lost the message (a Redis
  without persistence restarted, a purged or deleted queue), or a worker that
  died holds it reserved. A broker's visibility timeout is the model.

The message is only a pointer: starting the task is a compare-and-set, so
publishing twice costs a skipped delivery, never a second run.

Every time here is the database's (one clock for every host, see
:mod:`tasktoolkit.orm._clock`), compared and written in the statements, and
whether a task may run is the one rule of :mod:`tasktoolkit.orm._ready`.

Example::

    with sessions.begin() as session:
        found = to_publish(session, ["l2_wiring"], sweep_after=timedelta(minutes=1), limit=500)
        send(found)
        mark_published(session.connection(), [t.task_id for t in found], again=True)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from tasktoolkit.orm._clock import db_now, later
from tasktoolkit.orm._engine import supports_skip_locked
from tasktoolkit.orm._ready import not_ready, ready, ready_for
from tasktoolkit.orm._records import attempts_table
from tasktoolkit.orm._records import tasks_table as _T
from tasktoolkit.orm._states import TaskState

__all__ = [
    "Recorded",
    "ToPublish",
    "backoffs",
    "mark_published",
    "recorded",
    "to_publish",
]


@dataclass(frozen=True, slots=True)
class ToPublish:
    """A task the sweeper publishes; ``again`` when a message for it was sent before."""

    task_id: str
    name: str
    queue: str | None
    again: bool = False


@dataclass(frozen=True, slots=True)
class Recorded:
    """How the toolkit recorded the end of a run, as a bridge reports it to its queue.

    :param state: ``succeeded``, ``failed`` or ``cancelled`` when that run ended the
        task; ``pending`` when the task went back for another attempt.
    :param retry_in: then, seconds until its next attempt may start (0: at once).
    """

    state: str
    error_code: str | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = None
    retry_in: float | None = None


def to_publish(
    session: Session,
    names: Iterable[str],
    *,
    sweep_after: timedelta,
    limit: int,
) -> list[ToPublish]:
    """Up to ``limit`` pending tasks named one of ``names`` that a sweeper publishes now
    (the database's time), oldest first:

    - never published (since they were last made pending), and ready to run
      since ``sweep_after`` at least (spawned, and any backoff over, by then);
    - then published but not started within their ``redeliver_after`` from
      their publish and from the end of their backoff (``again``).

    Locked for the caller's transaction, skipping rows another sweeper holds
    where the database can (``SKIP LOCKED``). The first is served by
    ``ix_tasktoolkit_tasks_unpublished`` (state, published_at, created_at); the
    second reads the published pending tasks in that index, oldest publish
    first (a healthy queue's backlog).
    """
    wanted = sorted(set(names))
    if not wanted:
        return []
    columns = (_T.c.id, _T.c.name, _T.c.queue)
    never = (
        select(*columns)
        .where(ready_for(sweep_after), _T.c.published_at.is_(None), _T.c.name.in_(wanted))
        .order_by(_T.c.created_at)
    )
    redeliver = _T.c.redeliver_after
    overdue = (
        select(*columns)
        .where(
            ready(),
            _T.c.published_at.is_not(None),
            _T.c.name.in_(wanted),
            later(_T.c.published_at, redeliver) <= db_now(),
            or_(_T.c.not_before.is_(None), later(_T.c.not_before, redeliver) <= db_now()),
        )
        .order_by(_T.c.published_at)
    )
    skip_locked = supports_skip_locked(session)
    found: list[ToPublish] = []
    for query, again in ((never, False), (overdue, True)):
        left = limit - len(found)
        if left <= 0:
            break
        query = query.limit(left)
        if skip_locked:
            query = query.with_for_update(skip_locked=True)
        found += [ToPublish(r.id, r.name, r.queue, again) for r in session.execute(query)]
    return found


def mark_published(connection: Connection, task_ids: Sequence[str], *, again: bool = False) -> None:
    """Record that these tasks were published now (the database's time).

    Only tasks still pending: one that started meanwhile needs no mark. After
    the publish of a commit (``again`` false) only unmarked ones: a task
    re-queued since keeps none, so the sweeper still sees it. A sweeper's
    publish (``again``) marks its tasks afresh, which starts their
    ``redeliver_after`` over.
    """
    if not task_ids:
        return
    where = [_T.c.id.in_(sorted(task_ids)), _T.c.state == TaskState.PENDING.value]
    if not again:
        where.append(_T.c.published_at.is_(None))
    connection.execute(update(_T).where(*where).values(published_at=db_now()))


def backoffs(connection: Connection, task_ids: Sequence[str]) -> dict[str, float]:
    """The seconds left of the backoff of those of these tasks not ready to run yet
    (measured on the database's clock)."""
    if not task_ids:
        return {}
    rows = connection.execute(
        select(_T.c.id, _T.c.not_before, db_now().label("now")).where(
            _T.c.id.in_(sorted(task_ids)), not_ready()
        )
    )
    return {row.id: _seconds_between(row.now, row.not_before) for row in rows}


def recorded(connection: Connection, task_id: str, attempt: int) -> Recorded | None:
    """How attempt ``attempt`` of task ``task_id`` ended, as the toolkit recorded it
    (``None``: no such task, or the attempt's end is not recorded).

    Read from the attempt's own row, so that a later attempt, already started
    elsewhere, does not change what this one was: ``pending`` when it failed
    and the task went back for another attempt (or was handed back).
    """
    a = attempts_table
    now = db_now()
    row = connection.execute(
        select(
            _T.c.state,
            _T.c.attempts,
            _T.c.result,
            _T.c.not_before,
            now.label("now"),
            a.c.outcome,
            a.c.error_code,
            a.c.error_message,
        )
        .select_from(_T.outerjoin(a, (a.c.task_id == _T.c.id) & (a.c.number == attempt)))
        .where(_T.c.id == task_id)
    ).one_or_none()
    if row is None or row.outcome is None:
        return None
    last = row.attempts == attempt  # no attempt after this one yet
    if row.outcome == TaskState.SUCCEEDED.value:
        return Recorded(row.outcome, result=row.result)
    if row.outcome == TaskState.CANCELLED.value or (
        row.outcome == TaskState.FAILED.value and last and row.state == TaskState.FAILED.value
    ):
        return Recorded(row.outcome, row.error_code, row.error_message)
    # Failed for another attempt (or handed back): when does the next one run?
    waiting = last and row.state == TaskState.PENDING.value and row.not_before is not None
    retry_in = _seconds_between(row.now, row.not_before) if waiting else 0.0
    return Recorded(TaskState.PENDING.value, row.error_code, row.error_message, retry_in=retry_in)


def _seconds_between(now: datetime, moment: datetime) -> float:
    """Seconds from ``now`` (the server's) to ``moment``; 0 when past."""
    return max((moment - now).total_seconds(), 0.0)
