"""What a queue bridge writes and reads: tasks published, and tasks left unpublished.

A bridge publishes a task once it is committed ``pending`` (see
:mod:`tasktoolkit.orm._events`), then marks it published
(:func:`mark_published`). A task still ``pending`` and unmarked after a while
(the broker was down, the process died between the commit and the publish,
or the task was re-queued) is found by :func:`unpublished` and published again
by the bridge's sweeper. The message is only a pointer: starting the task is a
compare-and-set, so publishing twice costs a skipped delivery, never a second run.

Example::

    with sessions.begin() as session:
        before = utcnow() - timedelta(minutes=1)
        found = unpublished(session, ["l2_wiring"], before=before, limit=500)
        for task_id, name, queue in found:
            publish(task_id, name, queue)
        mark_published(session.connection(), [task_id for task_id, _, _ in found], utcnow())
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from tasktoolkit.orm._engine import supports_skip_locked
from tasktoolkit.orm._records import tasks_table as _T
from tasktoolkit.orm._states import TaskState

__all__ = ["backoffs", "mark_published", "unpublished"]


def mark_published(connection: Connection, task_ids: Sequence[str], now: datetime) -> None:
    """Record that these tasks were published at ``now`` (those still pending and unmarked).

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
        .values(published_at=now)
    )


def unpublished(
    session: Session, names: Iterable[str], *, before: datetime, limit: int
) -> list[tuple[str, str, str | None]]:
    """Up to ``limit`` pending tasks named one of ``names``, never published (since they
    were last made pending) and waiting since before ``before`` (spawned, and any retry's
    backoff over, by then), oldest first: ``(id, name, queue)``.

    Locked for the caller's transaction, skipping rows another sweeper holds
    where the database can (``SKIP LOCKED``). Served by
    ``ix_tasktoolkit_tasks_unpublished`` (state, published_at, created_at).
    """
    wanted = sorted(set(names))
    if not wanted:
        return []
    query = (
        select(_T.c.id, _T.c.name, _T.c.queue)
        .where(
            _T.c.state == TaskState.PENDING.value,
            _T.c.published_at.is_(None),
            _T.c.created_at <= before,
            or_(_T.c.not_before.is_(None), _T.c.not_before <= before),
            _T.c.name.in_(wanted),
        )
        .order_by(_T.c.created_at)
        .limit(limit)
    )
    if supports_skip_locked(session):
        query = query.with_for_update(skip_locked=True)
    return [(row.id, row.name, row.queue) for row in session.execute(query)]


def backoffs(connection: Connection, task_ids: Sequence[str], now: datetime) -> dict[str, datetime]:
    """The ``not_before`` of those of these tasks whose retry's backoff is not over at ``now``."""
    if not task_ids:
        return {}
    rows = connection.execute(
        select(_T.c.id, _T.c.not_before).where(_T.c.id.in_(sorted(task_ids)), _T.c.not_before > now)
    )
    return {row.id: row.not_before for row in rows}
