"""What a queue bridge writes and reads: tasks published, and tasks left unpublished.

A bridge publishes a task once it is committed ``pending`` (see
:mod:`tasktoolkit.orm._events`), then marks it published
(:func:`mark_published`). A task still ``pending`` and unmarked after a while
(the broker was down, the process died between the commit and the publish,
or the task was re-queued) is found by :func:`unpublished` and published again
by the bridge's sweeper. The message is only a pointer: starting the task is a
compare-and-set, so publishing twice costs a skipped delivery, never a second run.
Whether a task is ready to run is the one rule of :mod:`tasktoolkit.orm._ready`;
every time here is the database's.

Example::

    with sessions.begin() as session:
        found = unpublished(session, ["l2_wiring"], older_than=timedelta(minutes=1), limit=500)
        for task_id, name, queue in found:
            publish(task_id, name, queue)
        mark_published(session.connection(), [task_id for task_id, _, _ in found])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from tasktoolkit.orm._clock import db_now
from tasktoolkit.orm._engine import supports_skip_locked
from tasktoolkit.orm._ready import not_ready, ready_for
from tasktoolkit.orm._records import tasks_table as _T
from tasktoolkit.orm._states import TaskState

__all__ = ["backoffs", "mark_published", "unpublished"]


def mark_published(connection: Connection, task_ids: Sequence[str]) -> None:
    """Record that these tasks were published now (those still pending and unmarked).

    A task that started meanwhile needs no mark; one re-queued since keeps
    none, so the sweeper still sees it.
    """
    if not task_ids:
        return
    connection.execute(
        update(_T)
        .where(
            _T.c.id.in_(sorted(task_ids)),
            _T.c.state == TaskState.PENDING.value,
            _T.c.published_at.is_(None),
        )
        .values(published_at=db_now())
    )


def unpublished(
    session: Session, names: Iterable[str], *, older_than: timedelta, limit: int
) -> list[tuple[str, str, str | None]]:
    """Up to ``limit`` pending tasks named one of ``names``, never published (since they
    were last made pending) and ready to run for at least ``older_than`` (spawned, and
    any retry's backoff over, by then), oldest first: ``(id, name, queue)``.

    Locked for the caller's transaction, skipping rows another sweeper holds
    where the database can (``SKIP LOCKED``). Served by
    ``ix_tasktoolkit_tasks_unpublished`` (state, published_at, created_at).
    """
    wanted = sorted(set(names))
    if not wanted:
        return []
    query = (
        select(_T.c.id, _T.c.name, _T.c.queue)
        .where(ready_for(older_than), _T.c.published_at.is_(None), _T.c.name.in_(wanted))
        .order_by(_T.c.created_at)
        .limit(limit)
    )
    if supports_skip_locked(session):
        query = query.with_for_update(skip_locked=True)
    return [(row.id, row.name, row.queue) for row in session.execute(query)]


def backoffs(connection: Connection, task_ids: Sequence[str]) -> dict[str, datetime]:
    """The ``not_before`` of those of these tasks not ready to run yet (a retry's backoff
    is not over), to publish them for then."""
    if not task_ids:
        return {}
    rows = connection.execute(
        select(_T.c.id, _T.c.not_before).where(_T.c.id.in_(sorted(task_ids)), not_ready())
    )
    return {row.id: row.not_before for row in rows}
