"""Moving tasks through their state machine, safely from many processes at once.

Every move is a compare-and-set: ``UPDATE ... WHERE id = :id AND state =
:expected``. When another process moved the task first, the update matches no
row, the current state is read again and the move is re-checked, so two
processes can never both move the same task and no update is lost. A move the
state machine does not allow raises :class:`InvalidTransitionError` and
changes nothing. The task's operation counts (and, when this move ends the
last active task of an ended request, the operation itself) are updated in the
same transaction; signals go out after commit.

None of these functions commits: the caller's transaction decides.

Example::

    start_task(session, task_id, host="worker-1")
    set_progress(session, task_id, 50, message="half way")
    succeed_task(session, task_id)
    session.commit()
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import inspect, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tasktoolkit.errors import (
    InvalidProgressError,
    InvalidTransitionError,
    TaskNotFoundError,
    TaskNotHeldError,
)
from tasktoolkit.orm._events import queue_operation_finished, queue_task_change
from tasktoolkit.orm._types import utcnow
from tasktoolkit.orm.operations import count_task_transition
from tasktoolkit.orm.records import Task
from tasktoolkit.orm.records import tasks_table as _T
from tasktoolkit.orm.resource import _REGISTRY, expiry_policy_for
from tasktoolkit.orm.states import (
    TERMINAL_TASK_STATES,
    TRANSITIONS,
    TaskState,
    parse_task_state,
)
from tasktoolkit.signals import TaskChange

__all__ = [
    "cancel_task",
    "check_progress",
    "fail_task",
    "mark_cancelled",
    "set_progress",
    "start_task",
    "succeed_task",
    "transition",
]
_MAX_RETRIES = 5


def _execute(session: Session, statement: Any) -> CursorResult[Any]:
    """Run a Core UPDATE through the session (its transaction), without syncing objects."""
    return cast(
        CursorResult[Any],
        session.execute(statement, execution_options={"synchronize_session": False}),
    )


def check_progress(progress: object) -> int | None:
    """``progress`` if it is ``None`` or an integer 0..100; else :class:`InvalidProgressError`."""
    if progress is None:
        return None
    if isinstance(progress, bool) or not isinstance(progress, int) or not 0 <= progress <= 100:
        raise InvalidProgressError(f"progress must be an integer from 0 to 100, got {progress!r}")
    return progress


def _load(session: Session, task_id: str, *, lock: bool = False) -> Task:
    # A retry reads with a lock: under REPEATABLE READ (MariaDB) a plain read
    # would keep returning the snapshot the failed compare-and-set was based on.
    # For the same reason a move is never refused on a plain read: the refusal
    # is confirmed on a locking read, which sees the latest committed row.
    task = session.get(Task, task_id, populate_existing=True, with_for_update=lock or None)
    if task is None:
        raise TaskNotFoundError(f"no task {task_id!r}")
    return task


def _refresh_active_tasks(session: Session, task: Task) -> None:
    """Expire the loaded ``active_tasks`` of the task's resource, if it is in ``session``.

    The move is a Core UPDATE, which the ORM does not know to reflect in the
    resource's view-only ``active_tasks`` collection.
    """
    info = _REGISTRY.get(task.resource_type)
    if info is None:
        return
    key = session.identity_key(info.cls, getattr(task, info.column.name))
    resource = session.identity_map.get(key)
    if resource is not None and "active_tasks" in inspect(resource).dict:
        session.expire(resource, ["active_tasks"])


def transition(
    session: Session,
    task_id: str,
    to_state: TaskState | str,
    *,
    expected: TaskState | str | None = None,
    host: str | None = None,
    held_by: str | None = None,
    message: str | None = None,
    progress: int | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    error_traceback: str | None = None,
    now: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> Task:
    """Move a task to ``to_state``; the general form of the functions below.

    :param expected: the state the caller believes the task is in; when given,
        the move is refused (:class:`InvalidTransitionError`) if it is in another.
    :param host: the worker taking the task (recorded on ``running``).
    :param held_by: refuse the move (:class:`TaskNotHeldError`) unless the task's
        ``host`` is this worker.
    :param extra: more column values to set with the move (for workers).
    :returns: the task, with the values just written.
    """
    target = parse_task_state(to_state)
    expected_state = None if expected is None else parse_task_state(expected)
    progress = check_progress(progress)
    for attempt in range(_MAX_RETRIES):
        locked = attempt > 0
        task = _load(session, task_id, lock=locked)
        current = parse_task_state(task.state)
        refusal: Exception | None = None
        if (expected_state is not None and current != expected_state) or (
            target not in TRANSITIONS[current]
        ):
            refusal = InvalidTransitionError(task_id, current.value, target.value)
        elif held_by is not None and task.host != held_by:
            refusal = TaskNotHeldError(f"task {task_id} is held by {task.host!r}, not {held_by!r}")
        if refusal is not None:
            if locked:
                raise refusal
            continue  # the read may be a stale snapshot: confirm on the current row
        moment = now or utcnow()
        values: dict[str, Any] = {"state": target.value, "updated_at": moment}
        if target == TaskState.RUNNING:
            values.update(started_at=moment, heartbeat_at=moment, attempts=task.attempts + 1)
            if host is not None:
                values["host"] = host
        if target in TERMINAL_TASK_STATES:
            values["finished_at"] = moment
            values["expires_at"] = expiry_policy_for(task.resource_type).expires_at(
                moment, task.name, target.value
            )
            if target == TaskState.SUCCEEDED:
                values["progress"] = 100
        if message is not None:
            values["message"] = message
        if progress is not None:
            values["progress"] = progress
        if error_code is not None or error_message is not None:
            values.update(
                error_code=error_code or "error",
                error_message=error_message or "",
                error_traceback=error_traceback,
            )
        if extra:
            values.update(extra)
        where = [_T.c.id == task_id, _T.c.state == current.value]
        if target == TaskState.RUNNING:
            # Started, lost and re-queued since our read (pending again, an
            # attempt later): the count we add to must be the one we read.
            where.append(_T.c.attempts == task.attempts)
        if held_by is not None:
            where.append(_T.c.host == held_by)
        result = _execute(
            session,
            update(_T).where(*where).values(values),
        )
        if result.rowcount != 1:
            continue  # another process moved it first: read again and re-check
        for key, value in values.items():
            set_committed_value(task, key, value)
        _refresh_active_tasks(session, task)
        finished = None
        if task.request_id is not None:
            finished = count_task_transition(
                session.connection(), task.request_id, current.value, target.value, now=moment
            )
        # The task's move is announced before the operation it finishes.
        queue_task_change(
            session,
            TaskChange(
                task.id,
                task.request_id,
                task.resource_type,
                task.resource_id,
                task.name,
                current.value,
                target.value,
            ),
        )
        queue_operation_finished(session, finished)
        return task
    raise InvalidTransitionError(task_id, "contended", target.value)


def start_task(session: Session, task_id: str, *, host: str | None = None) -> Task:
    """``pending`` -> ``running``, recording the worker ``host``."""
    return transition(session, task_id, TaskState.RUNNING, expected=TaskState.PENDING, host=host)


def succeed_task(
    session: Session, task_id: str, *, message: str | None = None, held_by: str | None = None
) -> Task:
    """``running`` -> ``succeeded`` (progress 100)."""
    return transition(
        session,
        task_id,
        TaskState.SUCCEEDED,
        expected=TaskState.RUNNING,
        message=message,
        held_by=held_by,
    )


def fail_task(
    session: Session,
    task_id: str,
    *,
    code: str,
    message: str,
    traceback: str | None = None,
    held_by: str | None = None,
) -> Task:
    """``pending`` or ``running`` -> ``failed`` with an error code and message.

    :param traceback: kept for admins only.
    """
    return transition(
        session,
        task_id,
        TaskState.FAILED,
        error_code=code,
        error_message=message,
        error_traceback=traceback,
        held_by=held_by,
    )


def mark_cancelled(
    session: Session, task_id: str, *, message: str | None = None, held_by: str | None = None
) -> Task:
    """``running`` -> ``cancelled``: the worker acknowledges a cancellation request."""
    return transition(
        session,
        task_id,
        TaskState.CANCELLED,
        expected=TaskState.RUNNING,
        message=message,
        held_by=held_by,
    )


def cancel_task(session: Session, task_id: str) -> Task:
    """Cancel a task: a ``pending`` one at once, a ``running`` one is asked to stop.

    A running task gets ``cancel_requested``; its worker sees it and calls
    :func:`mark_cancelled`. A terminal task raises :class:`InvalidTransitionError`.
    """
    for attempt in range(_MAX_RETRIES):
        locked = attempt > 0
        task = _load(session, task_id, lock=locked)
        if task.state == TaskState.PENDING:
            try:
                return transition(session, task_id, TaskState.CANCELLED, expected=TaskState.PENDING)
            except InvalidTransitionError:
                continue  # a worker started it meanwhile: ask it to stop instead
        if task.state != TaskState.RUNNING:
            if not locked:
                continue  # confirm on the current row before refusing
            raise InvalidTransitionError(task_id, task.state, TaskState.CANCELLED.value)
        moment = utcnow()
        result = _execute(
            session,
            update(_T)
            .where(_T.c.id == task_id, _T.c.state == TaskState.RUNNING.value)
            .values(cancel_requested=True, updated_at=moment),
        )
        if result.rowcount == 1:
            set_committed_value(task, "cancel_requested", True)
            set_committed_value(task, "updated_at", moment)
            return task
    raise InvalidTransitionError(task_id, "contended", TaskState.CANCELLED.value)


def set_progress(
    session: Session,
    task_id: str,
    progress: int | None,
    *,
    message: str | None = None,
    held_by: str | None = None,
) -> Task:
    """Record progress (0..100) and an optional message on a non-terminal task."""
    progress = check_progress(progress)
    for attempt in range(_MAX_RETRIES):
        locked = attempt > 0
        task = _load(session, task_id, lock=locked)
        refusal: Exception | None = None
        if task.is_terminal:
            refusal = InvalidTransitionError(task_id, task.state, task.state)
        elif held_by is not None and task.host != held_by:
            refusal = TaskNotHeldError(f"task {task_id} is held by {task.host!r}, not {held_by!r}")
        if refusal is not None:
            if locked:
                raise refusal
            continue  # the read may be a stale snapshot: confirm on the current row
        moment = utcnow()
        values: dict[str, Any] = {"updated_at": moment}
        if progress is not None:
            values["progress"] = progress
        if message is not None:
            values["message"] = message
        where = [
            _T.c.id == task_id,
            _T.c.state.in_([TaskState.PENDING.value, TaskState.RUNNING.value]),
        ]
        if held_by is not None:
            where.append(_T.c.host == held_by)
        result = _execute(session, update(_T).where(*where).values(values))
        if result.rowcount != 1:
            continue  # moved or taken over meanwhile: read again and re-check
        for key, value in values.items():
            set_committed_value(task, key, value)
        return task
    raise InvalidTransitionError(task_id, "contended", "progress")
