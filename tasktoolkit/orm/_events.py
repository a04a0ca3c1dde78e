"""A task moved: its operation's counts, and signals sent after commit.

Every way a task is created or changes state (spawning, a transition, the
reaper, a ``Task`` added to a session) ends in :func:`record_moves`, which moves
the counts of the tasks' operations in the same transaction and queues the
signals, and hands the tasks that became ``pending`` to the engine's queue
bridge (its *dispatcher*, if it has one), to publish once they are committed.

Signals are queued in ``session.info``, each tagged with the savepoint (or
transaction) it was made in, and only when the signal has receivers. The
session gets the listeners that send them the first time something is queued
in it; no other session of the host's is touched. The signals go out from the
root transaction's ``after_commit`` only: a released savepoint hands its
signals to the enclosing one, a rolled-back savepoint drops its own (and only
its own), and a transaction that ends without a commit drops them all, so no
receiver ever hears of a change that was not committed. A dispatcher's work
is queued the same way, whether or not any signal has receivers.

Which dispatcher runs a task is chosen per task name: an engine carries one
:class:`Dispatchers` (task name -> dispatcher) under the execution option
:data:`DISPATCHER`, found on the connection the moves are counted on, and each
queue bridge made on that engine binds its names there (a name bound to two
is refused). So two backends share one database (two bridges, or a bridge
and database workers), only that engine's sessions publish, and a session
with nothing to publish pays a dictionary look-up per task made pending.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from blinker import NamedSignal
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Mapper, Session, SessionTransaction, object_session

from tasktoolkit import signals
from tasktoolkit._request_protocol import RequestOperation, announce
from tasktoolkit.errors import HandlerConflictError
from tasktoolkit.hooks import Hooks, PublishInfo, hooks_of
from tasktoolkit.orm._operations import (
    count_task_transition,
    keep_first_failure,
    notify_changed,
    open_or_count,
    pending_key,
    record_resources,
)
from tasktoolkit.orm._records import Task
from tasktoolkit.orm._states import TERMINAL_TASK_STATES, TaskState
from tasktoolkit.signals import OperationChange, TaskChange

__all__ = [
    "DISPATCHER",
    "Dispatcher",
    "Dispatchers",
    "change_of",
    "dispatchers",
    "queue_cancel_asked",
    "queue_operation_finished",
    "record_moves",
    "record_ready",
]

_QUEUE = "tasktoolkit.signals"
_LISTENING = "tasktoolkit.listening"
_log = logging.getLogger("tasktoolkit.dispatch")
#: The engine execution option that carries the engine's :class:`Dispatchers`.
DISPATCHER = "tasktoolkit_dispatchers"
#: Held while an engine gets its :class:`Dispatchers` (once per engine).
_MAKING = threading.Lock()


class Dispatcher(Protocol):
    """What a queue bridge does after a commit. Neither method may raise."""

    def publish(self, tasks: Sequence[TaskChange]) -> None:
        """Publish these tasks, which are now committed ``pending``."""
        ...

    def revoke(self, tasks: Sequence[TaskChange]) -> None:
        """Ask the queue to stop these running tasks, whose cancellation was committed."""
        ...


class Dispatchers:
    """Which dispatcher runs the tasks of each name, for one engine.

    A task name is bound to one dispatcher at most: binding it to another is
    refused, so a task is never published to two queues. A name bound to none
    is left to the database workers.
    """

    __slots__ = ("_by_name", "_lock")

    def __init__(self) -> None:
        self._by_name: dict[str, Dispatcher] = {}
        self._lock = threading.Lock()

    def bind(self, name: str, dispatcher: Dispatcher) -> None:
        """Run the tasks named ``name`` on ``dispatcher`` (again: nothing changes).

        :raises HandlerConflictError: ``name`` is bound to another dispatcher.
        """
        with self._lock:
            bound = self._by_name.setdefault(name, dispatcher)
        if bound is not dispatcher:
            raise HandlerConflictError(
                f"task {name!r} already runs on {bound!r}: a task name has one dispatcher"
            )

    def release(self, dispatcher: Dispatcher) -> None:
        """Unbind every name of ``dispatcher``."""
        with self._lock:
            for name in [n for n, d in self._by_name.items() if d is dispatcher]:
                del self._by_name[name]

    def get(self, name: str) -> Dispatcher | None:
        """The dispatcher of ``name``, or ``None``."""
        return self._by_name.get(name)

    def names(self, dispatcher: Dispatcher) -> frozenset[str]:
        """The names bound to ``dispatcher``."""
        with self._lock:
            return frozenset(n for n, d in self._by_name.items() if d is dispatcher)


def dispatchers(engine: Engine) -> Dispatchers:
    """The :class:`Dispatchers` of ``engine``, made (and carried by it) on first use."""
    with _MAKING:
        found = engine.get_execution_options().get(DISPATCHER)
        if not isinstance(found, Dispatchers):
            found = Dispatchers()
            engine.update_execution_options(**{DISPATCHER: found})
        return found


class _Queued:
    """Work waiting for the commit of the transaction (or savepoint) ``scope``.

    ``rank`` orders what one commit runs: the request's operation written (-1),
    task signals (0), then the operation signals (1) their moves caused,
    whatever order the code queued them in.
    """

    __slots__ = ("rank", "run", "scope")

    def __init__(
        self, scope: SessionTransaction | None, run: Callable[[], None], rank: int
    ) -> None:
        self.scope = scope
        self.run = run
        self.rank = rank


def change_of(
    task: Task,
    old_state: str | None,
    *,
    outcome: str | None = None,
    moved_at: datetime | None = None,
    ended: datetime | None = None,
) -> TaskChange:
    """The :class:`TaskChange` of ``task`` (as it is now) moving from ``old_state``.

    :param outcome: the outcome of the attempt this move ends, if it ends one.
    :param ended: when the attempt this move ends started (a re-queue clears the
        task's own ``started_at``).
    """
    return TaskChange(
        task.id,
        task.request_id,
        task.resource_type,
        task.resource_id,
        task.name,
        old_state,
        task.state,
        task.queue,
        attempt=task.attempts or 0,
        outcome=outcome,
        error_code=(
            task.error_code if outcome is not None or task.state == TaskState.FAILED else None
        ),
        created_at=task.created_at,
        started_at=task.started_at if outcome is None else ended or task.started_at,
        moved_at=moved_at,
    )


def record_moves(
    session: Session,
    changes: Sequence[TaskChange],
    *,
    connection: Connection | None = None,
    opening: RequestOperation | None = None,
    counted: Sequence[OperationChange] | None = None,
    waiting: frozenset[str] = frozenset(),
) -> None:
    """Roll ``changes`` into their operations' counts and queue their signals.

    One count statement per operation and kind of move; an operation whose
    last active task this ends is finished here too, at the database's time.
    A task that joins an operation (spawned, or re-run from a final state:
    it counts as new in its new operation, whose resources it adds to, here or,
    for the request being served, with its end) and an operation's first failed
    task (its ``error``) cost one statement each. No commit.

    :param connection: the connection to count on (default: the session's).
    :param opening: the operation of the request being served, not yet known
        to be written: new tasks of it write it (or add to its count), and it
        is known written once this transaction commits.
    :param counted: the changes were counted, and their waiters told, by the
        statement that made them (:func:`~tasktoolkit.orm._operations.counted_with`);
        these are the operations that finished.
    :param waiting: the ids of tasks made pending that wait on prerequisites: not
        published (:func:`record_ready` publishes them once they are ready).
    """
    conn = connection if connection is not None else session.connection()
    per_operation = Counter(
        (c.request_id, _counted_from(c), c.new_state)
        for c in changes
        if c.request_id is not None and counted is None
    )
    ready = [c for c in changes if c.new_state == TaskState.PENDING and c.task_id not in waiting]
    # Waiting requests: the moved tasks and every operation whose counts moved;
    # idle database workers: the queues of the tasks made pending.
    wake = [
        *(c.task_id for c in changes if c.old_state is not None and counted is None),
        *(operation_id for operation_id, _, _ in per_operation),
        *(pending_key(c.queue) for c in ready),
    ]
    finished: list[OperationChange | None] = list(counted or ())
    for (operation_id, old, new), count in per_operation.items():
        if opening is not None and old is None and operation_id == opening.fields.id:
            if open_or_count(conn, opening, count, notify=wake):
                wake = []  # sent with it
            _queue(session, opening.spawn_committed, -1)
        else:
            finished.append(count_task_transition(conn, operation_id, old, new, count=count))
    # The resources tasks join an operation on: those of the request being served
    # are kept with its end, off its thread (record_ended_resources); others now.
    serving = None if opening is None else opening.fields.id
    joined = [
        c
        for c in changes
        if c.request_id not in (None, serving) and _counted_from(c) is None
    ]
    if joined:
        record_resources(
            conn,
            sorted({(c.request_id or "", c.resource_type, c.resource_id) for c in joined}),
        )
    for change in changes:
        if change.request_id is not None and change.new_state == TaskState.FAILED:
            keep_first_failure(conn, change.request_id, change.task_id)
    if wake:
        notify_changed(conn, wake)
    for change in changes:
        signal = signals.task_created if change.old_state is None else signals.task_state_changed
        _queue_signal(session, signal, change, 0)
    hooks = hooks_of(conn)
    if hooks:
        _queue(session, partial(hooks.task_moved, list(changes)), 0)
    for operation in finished:
        queue_operation_finished(session, operation, hooks)
    _queue_publish(session, conn, ready, hooks)


def record_ready(session: Session, tasks: Sequence[Task]) -> None:
    """These pending tasks became ready (the last task they ran after succeeded): wake
    the idle workers of their queues, and publish them once this transaction commits.

    Not a move: no count, no signal.
    """
    if not tasks:
        return
    conn = session.connection()
    changes = [change_of(task, TaskState.PENDING.value) for task in tasks]
    notify_changed(conn, [*(c.task_id for c in changes), *(pending_key(c.queue) for c in changes)])
    _queue_publish(session, conn, changes, hooks_of(conn))


def _queue_publish(
    session: Session, conn: Connection, ready: Sequence[TaskChange], hooks: Hooks
) -> None:
    """Queue the publish of the ``ready`` tasks by their names' dispatchers, after commit."""
    registry = _dispatchers(conn)
    if registry is not None and ready:
        published: dict[Dispatcher, list[TaskChange]] = {}
        for change in ready:
            dispatcher = registry.get(change.name)
            if dispatcher is not None:
                published.setdefault(dispatcher, []).append(change)
        for dispatcher, tasks in published.items():
            _queue(session, partial(_publish, dispatcher, tasks, hooks), -1)


def _counted_from(change: TaskChange) -> str | None:
    """The state an operation's counts move ``change`` from: ``None`` for a task new to
    the operation (spawned, or re-run from a final state by the operation re-running it;
    the operation it ended in keeps its counts)."""
    if change.old_state in TERMINAL_TASK_STATES:
        return None
    return change.old_state


def _dispatchers(connection: Connection) -> Dispatchers | None:
    found: Dispatchers | None = connection.get_execution_options().get(DISPATCHER)
    return found


def queue_cancel_asked(session: Session, change: TaskChange) -> None:
    """Once ``session`` commits, tell the dispatcher of the task's name that a running
    task was asked to stop (a task that runs on a queue)."""
    registry = _dispatchers(session.connection())
    dispatcher = None if registry is None else registry.get(change.name)
    if dispatcher is not None:
        _queue(session, partial(_guarded, dispatcher.revoke, [change]), -1)


def _publish(dispatcher: Dispatcher, changes: Sequence[TaskChange], hooks: Hooks) -> None:
    """``dispatcher.publish(changes)`` inside the hooks' ``around_publish``; never raises."""
    info = PublishInfo(type(dispatcher).__name__, tuple(c.task_id for c in changes))
    with hooks.around_publish(info):
        _guarded(dispatcher.publish, changes)


def _guarded(run: Callable[[Sequence[TaskChange]], None], changes: Sequence[TaskChange]) -> None:
    """``run(changes)``; an error is logged, never raised out of a commit that is done."""
    try:
        run(changes)
    except Exception:
        _log.exception("dispatching %d committed task(s) failed", len(changes))


def queue_operation_finished(
    session: Session, change: OperationChange | None, hooks: Hooks | None = None
) -> None:
    """Announce ``change`` (the signal and the hooks: :func:`announce`) once ``session`` commits.

    :param hooks: the engine's hooks, when the caller has them at hand.
    """
    if change is None:
        return
    if hooks is None:
        hooks = hooks_of(session.connection())
    if hooks or signals.operation_finished.receivers:
        _queue(session, partial(announce, hooks, change), 1)


def _queue_signal(
    session: Session, signal: NamedSignal, change: TaskChange | OperationChange, rank: int
) -> None:
    if signal.receivers:  # else nothing to keep until the commit
        sender = change.resource_type if isinstance(change, TaskChange) else None
        _queue(session, partial(signals.send, signal, change, sender), rank)


def _queue(session: Session, run: Callable[[], None], rank: int) -> None:
    """Run ``run`` once the change made now in ``session`` is committed."""
    if not session.info.get(_LISTENING):
        event.listen(session, "after_commit", _send_queued)
        event.listen(session, "after_soft_rollback", _drop_rolled_back)
        event.listen(session, "after_transaction_end", _drop_uncommitted)
        session.info[_LISTENING] = True
    # A change belongs to the innermost savepoint open when it is made: rolling
    # that savepoint back must drop its signal and no other.
    scope = session.get_nested_transaction() or session.get_transaction()
    queue: list[_Queued] = session.info.setdefault(_QUEUE, [])
    queue.append(_Queued(scope, run, rank))


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
        queued.run()


def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    boundary = _boundary(previous_transaction)
    if boundary.parent is None:
        session.info.pop(_QUEUE, None)
        return
    queue = session.info.get(_QUEUE)
    if queue:
        queue[:] = [q for q in queue if not _within(q.scope, boundary)]


def _drop_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # The root transaction ended: whatever is still queued was never committed
    # (``session.close()`` without a commit ends it with no rollback event).
    if transaction.parent is None:
        session.info.pop(_QUEUE, None)


@event.listens_for(Task, "after_insert")
def _task_added(mapper: Mapper[Any], connection: Connection, task: Task) -> None:
    """A ``Task`` added to a session and flushed (not spawned): count it and announce it."""
    session = object_session(task)
    if session is not None:
        record_moves(session, [change_of(task, None)], connection=connection)
