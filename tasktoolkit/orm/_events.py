"""Session hooks: roll new tasks into their operation's counts, send signals after commit.

Changes a session makes are queued in ``session.info`` as they are flushed,
each tagged with the savepoint (or transaction) it was made in. The signals go
out from the root transaction's ``after_commit`` only: a released savepoint
hands its signals to the enclosing one, a rolled-back savepoint drops its own
(and only its own), and a transaction that ends without a commit drops them
all, so no receiver ever hears of a change that was not committed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction

from tasktoolkit import signals
from tasktoolkit.orm.operations import count_task_transition
from tasktoolkit.orm.records import Task
from tasktoolkit.signals import OperationChange, TaskChange

__all__ = ["queue_operation_finished", "queue_task_change"]

_QUEUE = "tasktoolkit.signals"


class _Queued:
    """A signal waiting for the commit of the transaction (or savepoint) ``scope``.

    ``rank`` orders what one commit sends: task signals (0) before the
    operation signals (1) their moves caused, whatever order the code queued them in.
    """

    __slots__ = ("rank", "scope", "send")

    def __init__(
        self, scope: SessionTransaction | None, send: Callable[[], Any], rank: int
    ) -> None:
        self.scope = scope
        self.send = send
        self.rank = rank


def _boundary(transaction: SessionTransaction) -> SessionTransaction:
    """The savepoint or root whose commit or rollback decides ``transaction``'s changes."""
    while not transaction.nested and transaction.parent is not None:
        transaction = transaction.parent
    return transaction


def _within(scope: SessionTransaction | None, boundary: SessionTransaction) -> bool:
    while scope is not None:
        if scope is boundary:
            return True
        scope = scope.parent
    return False


def _queue(session: Session, send: Callable[[], Any], rank: int) -> None:
    # A change belongs to the innermost savepoint open when it is made: rolling
    # that savepoint back must drop its signal and no other.
    scope = session.get_nested_transaction() or session.get_transaction()
    queue: list[_Queued] = session.info.setdefault(_QUEUE, [])
    queue.append(_Queued(scope, send, rank))


def queue_task_change(session: Session, change: TaskChange) -> None:
    """Send ``change`` (created or state changed) once ``session`` commits."""
    signal = signals.task_created if change.old_state is None else signals.task_state_changed
    _queue(session, lambda: signal.send(change.resource_type, change=change), 0)


def queue_operation_finished(session: Session, change: OperationChange | None) -> None:
    """Send ``operation_finished`` for ``change`` once ``session`` commits."""
    if change is not None:
        _queue(session, lambda: signals.operation_finished.send(None, change=change), 1)


@event.listens_for(Session, "after_flush")
def _count_new_tasks(session: Session, flush_context: UOWTransaction) -> None:
    new_tasks = [obj for obj in session.new if isinstance(obj, Task)]
    if not new_tasks:
        return
    per_operation = Counter((t.request_id, t.state) for t in new_tasks if t.request_id is not None)
    connection = session.connection()
    finished = [
        count_task_transition(connection, operation_id, None, state, count=count)
        for (operation_id, state), count in per_operation.items()
    ]
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

    # An operation finishes because of its tasks: announce the tasks first.
    for change in finished:
        queue_operation_finished(session, change)


@event.listens_for(Session, "after_commit")
def _send_queued(session: Session) -> None:
    released = session.get_nested_transaction()
    if released is not None:
        # RELEASE SAVEPOINT, not a commit: the changes now stand or fall with
        # the enclosing savepoint or transaction.
        parent = released.parent
        enclosing = None if parent is None else _boundary(parent)
        for queued in session.info.get(_QUEUE, ()):
            if queued.scope is released:
                queued.scope = enclosing
        return
    queue: list[_Queued] = session.info.pop(_QUEUE, None) or []
    for queued in sorted(queue, key=lambda q: q.rank):  # stable: queue order within a rank
        queued.send()


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    boundary = _boundary(previous_transaction)
    if boundary.parent is None:
        session.info.pop(_QUEUE, None)
        return
    queue = session.info.get(_QUEUE)
    if queue:
        queue[:] = [q for q in queue if not _within(q.scope, boundary)]


@event.listens_for(Session, "after_transaction_end")
def _drop_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # The root transaction ended: whatever is still queued was never committed
    # (``session.close()`` without a commit ends it with no rollback event).
    if transaction.parent is None:
        session.info.pop(_QUEUE, None)
