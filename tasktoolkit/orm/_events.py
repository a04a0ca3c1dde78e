"""Session hooks: roll new tasks into their operation's counts, send signals after commit.

Changes a session makes are queued in ``session.info`` as they are flushed and
the signals go out from ``after_commit`` only; ``after_rollback`` drops them,
so no receiver ever hears of a change that was not committed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, UOWTransaction

from tasktoolkit import signals
from tasktoolkit.orm.operations import count_task_transition
from tasktoolkit.orm.records import Task
from tasktoolkit.signals import OperationChange, TaskChange

__all__ = ["queue_operation_finished", "queue_task_change"]

_QUEUE = "tasktoolkit.signals"


def _queue(session: Session) -> list[Callable[[], Any]]:
    queue: list[Callable[[], Any]] = session.info.setdefault(_QUEUE, [])
    return queue


def queue_task_change(session: Session, change: TaskChange) -> None:
    """Send ``change`` (created or state changed) once ``session`` commits."""
    signal = signals.task_created if change.old_state is None else signals.task_state_changed
    _queue(session).append(lambda: signal.send(change.resource_type, change=change))


def queue_operation_finished(session: Session, change: OperationChange | None) -> None:
    """Send ``operation_finished`` for ``change`` once ``session`` commits."""
    if change is not None:
        _queue(session).append(lambda: signals.operation_finished.send(None, change=change))


@event.listens_for(Session, "after_flush")
def _count_new_tasks(session: Session, flush_context: UOWTransaction) -> None:
    new_tasks = [obj for obj in session.new if isinstance(obj, Task)]
    if not new_tasks:
        return
    per_operation = Counter((t.request_id, t.state) for t in new_tasks if t.request_id is not None)
    connection = session.connection()
    for (operation_id, state), count in per_operation.items():
        change = count_task_transition(connection, operation_id, None, state, count=count)
        queue_operation_finished(session, change)
    for task in new_tasks:
        queue_task_change(
            session,
            TaskChange(
                task.id,
                task.request_id,
                task.resource_type,
                task.resource_id,
                task.name,
                None,
                task.state,
            ),
        )


@event.listens_for(Session, "after_commit")
def _send_queued(session: Session) -> None:
    queue = session.info.pop(_QUEUE, None)
    for send in queue or ():
        send()


@event.listens_for(Session, "after_rollback")
def _drop_queued(session: Session) -> None:
    session.info.pop(_QUEUE, None)
