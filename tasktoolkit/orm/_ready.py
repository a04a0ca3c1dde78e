"""Ready to run: the one rule of whether a pending task may start now.

A pending task runs only when it is ready. Every place that starts or hands
out tasks asks this module, on the database's clock: the claims of database
workers (:func:`~tasktoolkit.orm._workers.claimable`, which the PostgreSQL
claim of :func:`~tasktoolkit.orm._transitions.start_oldest` runs too), a
queue bridge's sweeper and its publishing after a commit
(:mod:`tasktoolkit.orm._publishing`), and the start deadline of a task
(spawned, or re-queued after a failure), which counts from the moment the
task became ready.

A task is ready once

- every task it runs ``after`` has succeeded: its ``waiting_on`` (how many
  have not) is 0. The end of a prerequisite moves it (see
  :func:`~tasktoolkit.orm._transitions._follow`): a success counts it down,
  and the success that brings it to 0 marks the moment it became ready
  (``not_before``) and counts its start deadline from then; a failure or a
  cancel fails it ``dependency_failed``;
- its retry's backoff (``not_before``) has passed;
- its name is not ``exclusive`` on its resource, or no other task of that
  name runs on the resource and none older waits there (creation order).

The first two are on columns of the pending task's own row, ``waiting_on``
beside ``state`` and ``queue`` in the claims' index, so a claim stays an
index seek however many tasks wait on prerequisites; the third is looked up
only for an exclusive task, in the resource's index.

Example::

    select(tasks_table.c.id).where(ready(), tasks_table.c.name == "l2_wiring")
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, and_, exists, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from tasktoolkit.orm._clock import Moment, db_now, later
from tasktoolkit.orm._records import Task
from tasktoolkit.orm._records import tasks_table as _T
from tasktoolkit.orm._states import TaskState

__all__ = [
    "DEPENDENCY",
    "EXCLUSIVE",
    "behind",
    "next_exclusive",
    "not_ready",
    "ready",
    "ready_for",
    "start_deadline",
    "waiting",
]

#: Why a pending task does not run yet: a task it runs after has not succeeded.
DEPENDENCY = "dependency"
#: Why a pending task does not run yet: another task of its exclusive name runs on
#: its resource, or an older one waits there.
EXCLUSIVE = "exclusive"

_PENDING = _T.c.state == TaskState.PENDING.value
_NOT_WAITING = _T.c.waiting_on == 0
_S = _T.alias("tt_sibling")


def _backoff_over(moment: Moment) -> ColumnElement[bool]:
    return or_(_T.c.not_before.is_(None), _T.c.not_before <= moment)


def _ahead() -> ColumnElement[bool]:
    """Another task of the same name and resource as the row runs, or waits from earlier."""
    older = (_S.c.created_at < _T.c.created_at) | and_(
        _S.c.created_at == _T.c.created_at, _S.c.id < _T.c.id
    )
    return (
        exists()
        .where(
            _S.c.resource_type == _T.c.resource_type,
            _S.c.resource_id == _T.c.resource_id,
            _S.c.name == _T.c.name,
            _S.c.id != _T.c.id,
            (_S.c.state == TaskState.RUNNING.value)
            | ((_S.c.state == TaskState.PENDING.value) & older),
        )
        .correlate(_T)
    )


def _alone() -> ColumnElement[bool]:
    """Not exclusive, or no other task of its name runs (or waits from earlier) on its resource."""
    return or_(_T.c.exclusive.is_(False), ~_ahead())


def ready() -> ColumnElement[bool]:
    """The task is pending and may start now."""
    return _PENDING & _NOT_WAITING & _backoff_over(db_now()) & _alone()


def ready_for(older_than: timedelta) -> ColumnElement[bool]:
    """The task is pending and has been ready for at least ``older_than``.

    Its spawn is that old too (``created_at``, which an index on pending tasks
    carries, seeks the rows).
    """
    moment = later(db_now(), -older_than) if older_than else db_now()
    return _PENDING & _NOT_WAITING & (_T.c.created_at <= moment) & _backoff_over(moment) & _alone()


def not_ready() -> ColumnElement[bool]:
    """The task is pending and its backoff is not over."""
    return _PENDING & (_T.c.not_before > db_now())


def behind(session: Session, task_id: str) -> bool:
    """Whether the task is exclusive and another of its name runs, or waits from
    earlier, on its resource (a start by its id, as a queue bridge's delivery, asks)."""
    found = session.execute(
        select(_T.c.id).where(_T.c.id == task_id, _T.c.exclusive.is_(True), _ahead())
    ).first()
    return found is not None


def next_exclusive(task: Task) -> Select[Task]:
    """The task of ``task``'s exclusive name and resource that may run now that ``task``
    left ``running`` (or ended pending), if any: to publish, and to wake workers for."""
    return (
        select(Task)
        .where(
            _T.c.resource_type == task.resource_type,
            _T.c.resource_id == task.resource_id,
            _T.c.name == task.name,
            _PENDING,
            _NOT_WAITING,
            ~_ahead(),
        )
        .order_by(_T.c.created_at, _T.c.id)
        .limit(1)
    )


def waiting(session: Session, tasks: Iterable[Task]) -> dict[str, str]:
    """Why each of these pending tasks does not run yet, where it is for an order:
    ``dependency`` or ``exclusive`` (a task missing from the answer: neither).

    Read per list, not per row: one statement for all the exclusive ones.
    """
    found: dict[str, str] = {}
    exclusive: list[str] = []
    for task in tasks:
        if task.state != TaskState.PENDING.value:
            continue
        if task.waiting_on:
            found[task.id] = DEPENDENCY
        elif task.exclusive:
            exclusive.append(task.id)
    if exclusive:
        behind: Sequence[str] = (
            session.execute(select(_T.c.id).where(_T.c.id.in_(sorted(exclusive)), _ahead()))
            .scalars()
            .all()
        )
        found.update(dict.fromkeys(behind, EXCLUSIVE))
    return found


def start_deadline(
    became_ready: Moment, start_timeout: float | ColumnElement[Any] | None
) -> Moment | None:
    """When a task that became ready at ``became_ready`` (its spawn, the end of its
    backoff) must have started: ``start_timeout`` seconds later (a number, or a bound
    value that may be ``NULL``); ``None``: never."""
    return None if start_timeout is None else later(became_ready, start_timeout)
