"""Ready to run: the one rule of whether a pending task may start now.

A pending task runs only when it is ready. Every place that starts or hands
out tasks asks this module, on the database's clock: the claims of database
workers (:func:`~tasktoolkit.orm._workers.claimable`, which the PostgreSQL
claim of :func:`~tasktoolkit.orm._transitions.start_oldest` runs too), a
queue bridge's sweeper and its publishing after a commit
(:mod:`tasktoolkit.orm._publishing`), and the start deadline of a task
(spawned, or re-queued after a failure), which counts from the moment the
task became ready.

Today a task is ready once its retry's backoff (``not_before``) has passed.
The rule is where "every task it runs ``after`` has succeeded" and "no other
exclusive task of its resource runs" will join it: each a condition of
:func:`ready` and :func:`ready_for`, and a later moment to count the start
deadline from (:func:`start_deadline`).

Every condition is on columns of the pending task's own row beside the
index a caller seeks (``state`` first), so a claim stays an index seek.

Example::

    select(tasks_table.c.id).where(ready(), tasks_table.c.name == "l2_wiring")
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import or_
from sqlalchemy.sql.elements import ColumnElement

from tasktoolkit.orm._clock import Moment, db_now, later
from tasktoolkit.orm._records import tasks_table as _T
from tasktoolkit.orm._states import TaskState

__all__ = ["not_ready", "ready", "ready_for", "start_deadline"]

_PENDING = _T.c.state == TaskState.PENDING.value


def _backoff_over(moment: Moment) -> ColumnElement[bool]:
    return or_(_T.c.not_before.is_(None), _T.c.not_before <= moment)


def ready() -> ColumnElement[bool]:
    """The task is pending and may start now."""
    return _PENDING & _backoff_over(db_now())


def ready_for(older_than: timedelta) -> ColumnElement[bool]:
    """The task is pending and has been ready for at least ``older_than``.

    Its spawn is that old too (``created_at``, which an index on pending tasks
    carries, seeks the rows).
    """
    moment = later(db_now(), -older_than) if older_than else db_now()
    return _PENDING & (_T.c.created_at <= moment) & _backoff_over(moment)


def not_ready() -> ColumnElement[bool]:
    """The task is pending and may not start yet (its backoff is not over)."""
    return _PENDING & (_T.c.not_before > db_now())


def start_deadline(
    became_ready: Moment, start_timeout: float | ColumnElement[Any] | None
) -> Moment | None:
    """When a task that became ready at ``became_ready`` (its spawn, the end of its
    backoff) must have started: ``start_timeout`` seconds later (a number, or a bound
    value that may be ``NULL``); ``None``: never."""
    return None if start_timeout is None else later(became_ready, start_timeout)
