"""Moving tasks through their state machine, safely from many processes at once.

Every change of a task goes through one loop, :func:`_apply`: read the row,
decide, then ``UPDATE ... WHERE id = :id AND state = :read_state`` (a
compare-and-set). When another process changed the task first, the update
matches no row, the row is read again (with a lock) and the change decided
anew, so two processes can never both move the same task and no update is
lost. A change the state machine does not allow raises
:class:`InvalidTransitionError` and writes nothing. A move is recorded with
:func:`~tasktoolkit.orm._events.record_moves` (the operation's counts, in the
same transaction; the signals, after commit).

Each move has one function, used by API code (in its own session) and by
workers alike. Given ``host``, the move is a worker's report on a task it
*holds* (``running`` on that host), refused with :class:`TaskNotHeldError`
otherwise. Values are checked the same way for both.

A move that ends an attempt (a ``running`` task that succeeds, fails, is
cancelled, re-queued or handed back) writes the attempt's row in the same
statement batch (:func:`_apply`, from the ``attempt`` of its change). A task
goes back from ``running`` to ``pending`` only through :func:`_requeue`: a
retryable failure, a lost worker, or a worker handing it back; this move is
not in :data:`~tasktoolkit.orm._states.TRANSITIONS`, which API code uses.

None of these functions commits: the caller's transaction decides.

Example::

    start_task(session, task_id, host="worker-1")
    report_progress(session, task_id, 50, message="half way", host="worker-1")
    succeed_task(session, task_id, host="worker-1")
    session.commit()
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, case, func, insert, inspect, literal, null, select, true, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.elements import ClauseElement, ColumnElement

from tasktoolkit import context
from tasktoolkit._checks import UNSTORABLE, storable
from tasktoolkit._request_protocol import RequestOperation
from tasktoolkit.errors import (
    InvalidErrorCodeError,
    InvalidProgressError,
    InvalidResultError,
    InvalidTransitionError,
    NothingToRerunError,
    OperationNotFoundError,
    OperationTransitionError,
    TaskNotFoundError,
    TaskNotHeldError,
)
from tasktoolkit.orm._clock import Moment, db_now, later
from tasktoolkit.orm._events import change_of, queue_cancel_asked, record_moves, record_ready
from tasktoolkit.orm._operations import (
    CHANGES_CHANNEL,
    counted_with,
    finish_counted,
    notify_changed,
)
from tasktoolkit.orm._ready import behind, next_exclusive, start_deadline
from tasktoolkit.orm._records import Task, attempts_table
from tasktoolkit.orm._records import operations_table as _OPERATIONS
from tasktoolkit.orm._records import tasks_table as _T
from tasktoolkit.orm._resource import _REGISTRY
from tasktoolkit.orm._rules import DEFAULT_RULES, row_rules
from tasktoolkit.orm._states import (
    ACTIVE_TASK_STATES,
    TERMINAL_TASK_STATES,
    TRANSITIONS,
    OperationState,
    TaskState,
    parse_task_state,
)
from tasktoolkit.orm._types import json_text
from tasktoolkit.signals import OperationChange

__all__ = [
    "DEPENDENCY_FAILED",
    "HANDED_BACK",
    "MAX_ERROR_CODE",
    "MAX_RESULT_BYTES",
    "NOT_STARTED",
    "RERUNNABLE",
    "WORKER_LOST",
    "acknowledge_cancel",
    "cancel_operation",
    "cancel_task",
    "check_host",
    "check_progress",
    "check_result",
    "fail_not_started",
    "fail_task",
    "hand_back",
    "known_task",
    "not_held",
    "note_refused",
    "reap_lost",
    "report_progress",
    "rerun_operation",
    "rerun_task",
    "start_oldest",
    "start_ready",
    "start_task",
    "succeed_task",
    "transition",
]

#: The longest error code (the column's size).
MAX_ERROR_CODE = 64
#: The error code of a task whose worker stopped heartbeating.
WORKER_LOST = "worker_lost"
#: The error code of a pending task that no worker started before its deadline.
NOT_STARTED = "not_started"
#: The error code of a task that a task it ran after failed (or was cancelled) before it.
DEPENDENCY_FAILED = "dependency_failed"
#: The outcome of an attempt whose worker stopped and gave the task back.
HANDED_BACK = "handed_back"
#: Longest message and traceback kept, in characters: longer ones are cut (a
#: message at its end, a traceback at its start), leaving room for 4-byte
#: characters in MariaDB's 64 KiB TEXT.
_MAX_MESSAGE = 4000
_MAX_TRACEBACK = 16000
_MAX_RETRIES = 5
#: The largest task result: its compact JSON, in UTF-8 bytes.
MAX_RESULT_BYTES = 16 * 1024


def check_progress(progress: object) -> int | None:
    """``progress`` if it is ``None`` or an integer 0..100; else :class:`InvalidProgressError`."""
    if progress is None:
        return None
    if isinstance(progress, bool) or not isinstance(progress, int) or not 0 <= progress <= 100:
        raise InvalidProgressError(f"progress must be an integer from 0 to 100, got {progress!r}")
    return progress


def check_result(result: object) -> dict[str, Any] | None:
    """``result`` if it is ``None`` or a JSON object of at most 16 KiB; else
    :class:`InvalidResultError`."""
    if result is None:
        return None
    if not isinstance(result, dict):
        kind = type(result).__name__
        raise InvalidResultError(f"a task result must be a JSON object, got {kind}")
    try:
        encoded = json_text(result)
    except (TypeError, ValueError) as exc:
        raise InvalidResultError(f"a task result must be JSON: {exc}") from None
    try:
        size = len(encoded.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidResultError("a task result must be text UTF-8 can encode") from None
    if size > MAX_RESULT_BYTES:
        raise InvalidResultError(
            f"a task result must be at most {MAX_RESULT_BYTES} bytes of JSON, got {size}"
        )
    # As it will read back (keys become strings, tuples lists).
    loaded: dict[str, Any] = json.loads(encoded)
    return loaded


def check_host(host: object) -> str:
    """``host`` if it is a worker identity: 1 to 255 characters."""
    if not isinstance(host, str) or not host or len(host) > 255:
        raise ValueError(f"host must be a non-empty string of at most 255 characters: {host!r}")
    return host


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _message(message: object) -> str | None:
    return None if message is None else storable(str(message)[:_MAX_MESSAGE])


def _error(code: object, message: object, traceback: str | None) -> dict[str, Any]:
    """The error columns of a failure, checked before any of it reaches the database."""
    if (
        not isinstance(code, str)
        or not code
        or len(code) > MAX_ERROR_CODE
        or UNSTORABLE.search(code)
    ):
        raise InvalidErrorCodeError(
            f"error code must be 1 to {MAX_ERROR_CODE} characters, no NUL or lone surrogate, "
            f"got {code!r}"
        )
    return {
        "error_code": code,
        "error_message": _message(message) or "",
        "error_traceback": None if traceback is None else storable(traceback[-_MAX_TRACEBACK:]),
    }


def _execute(session: Session, statement: Any) -> CursorResult[Any]:
    """Run a Core statement through the session (its transaction), without syncing objects."""
    return cast(
        CursorResult[Any],
        session.execute(statement, execution_options={"synchronize_session": False}),
    )


@dataclass(frozen=True, slots=True)
class _Change:
    """What to write to a task: ``values``, if the row still is as read (``where``).

    :param target: the state this moves the task to; ``None`` for no move.
    :param attempt: the outcome and error of the attempt this move ends.
    """

    values: dict[str, Any]
    where: list[ColumnElement[bool]] = field(default_factory=list)
    target: TaskState | None = None
    attempt: dict[str, Any] | None = None


#: Decides, from the task as read and the database's time of that read, the change to
#: write, or the error to refuse with.
_Decide = Callable[[Task, Moment], "_Change | Exception"]


def _load(session: Session, task_id: str, *, lock: bool) -> tuple[Task, datetime]:
    """The task as committed, and the database's time, read in one statement."""
    # A retry reads with a lock: under REPEATABLE READ (MariaDB) a plain read
    # would keep returning the snapshot the failed compare-and-set was based on.
    # For the same reason a change is never refused on a plain read: the refusal
    # is confirmed on a locking read, which sees the latest committed row.
    query = select(Task, db_now()).where(Task.id == task_id)
    if lock:
        query = query.with_for_update()
    row = session.execute(query.execution_options(populate_existing=True)).one_or_none()
    if row is None:
        raise TaskNotFoundError(f"no task {task_id!r}")
    return row[0], row[1]


def _read_time(now: Moment) -> datetime:
    """``now`` as a value: a decision on times is made from a read, never a snapshot."""
    if not isinstance(now, datetime):
        raise TypeError("this move decides on times: it reads the task, not a snapshot")
    return now


def _apply(
    session: Session,
    task_id: str,
    decide: _Decide,
    what: str,
    *,
    opening: RequestOperation | None = None,
) -> Task:
    """The read / decide / compare-and-set / retry loop of every change of a task.

    The database's time comes with the read of the task: every time the
    change writes is that one (one clock, see :mod:`tasktoolkit.orm._clock`).
    A task the caller already holds a snapshot of (:func:`known_task`, a
    worker's claimed task) is not read first: the times are then computed in
    the statements themselves, and the compare-and-set also requires every
    column a decision reads to be as in the snapshot, so a stale one costs a
    locked read and a second decision, never a wrong move.

    :param opening: the operation of the request being served, which a task
        joining it (a re-run) writes, as a spawn does (see :func:`record_moves`).
    """
    snapshot = _known(session, task_id)
    for attempt in range(_MAX_RETRIES):
        locked = attempt > 0
        now: Moment
        if snapshot is not None and not locked:
            task, now = snapshot, db_now()
        else:
            task, now = _load(session, task_id, lock=locked)
        change = decide(task, now)
        if isinstance(change, Exception):
            if locked:
                raise change
            continue  # the read may be a stale snapshot: confirm on the current row
        where = [_T.c.id == task_id, _T.c.state == task.state, *change.where]
        if task is snapshot:
            where += _as_read(task)
        old_state, started_at = task.state, task.started_at
        counted: list[OperationChange] | None = None
        moved_at: datetime | None
        if task is snapshot and _counts_in_one(session, task, change, now):
            done = _move_in_one(session, task, where, change, now)
            if done is None:
                continue  # another process changed it first: read again and decide again
            moved_at, counted = done
        else:
            result = _execute(session, update(_T).where(*where).values(change.values))
            if result.rowcount != 1:
                continue  # another process changed it first: read again and decide again
            moved_at = now if isinstance(now, datetime) else None
            if change.attempt is not None:
                moved_at = _end_attempt(session, task, change.attempt, now)
        for key, value in change.values.items():
            # A time computed in the statement is not known here: the snapshot
            # keeps its own (the job that holds it is done with it).
            if not isinstance(value, ClauseElement):
                set_committed_value(task, key, value)
        if change.target is not None:
            _refresh_active_tasks(session, task)
            outcome = None if change.attempt is None else change.attempt["outcome"]
            moved = change_of(
                task, old_state, outcome=outcome, moved_at=moved_at, ended=started_at
            )
            record_moves(session, [moved], opening=opening, counted=counted)
            if task.awaited and change.target in TERMINAL_TASK_STATES:
                _follow(session, task, change.target)
            if task.exclusive and change.target in TERMINAL_TASK_STATES:
                _release_exclusive(session, task)
        else:  # not a move (asked to stop): its view changed all the same
            notify_changed(session.connection(), [task.id, task.request_id])
        return task
    raise InvalidTransitionError(task_id, "contended", what)


def _counts_in_one(session: Session, task: Task, change: _Change, now: Moment) -> bool:
    """Whether the move ends an attempt of a task of an operation, from a snapshot (its
    time the statement's), to a final state, on PostgreSQL: then one statement makes it,
    writes the attempt's row, counts it and tells the waiters (:func:`_move_in_one`)."""
    return (
        change.attempt is not None
        and change.target in TERMINAL_TASK_STATES
        and task.request_id is not None
        and not isinstance(now, datetime)
        and _is_postgresql(session)
    )


def _move_in_one(
    session: Session,
    task: Task,
    where: list[ColumnElement[bool]],
    change: _Change,
    now: Moment,
) -> tuple[datetime, list[OperationChange]] | None:
    """The compare-and-set of ``change``, the row of the attempt it ends, the count of
    the operation and the ``NOTIFY`` of the task's and the operation's waiters, in one
    statement of data-modifying CTEs (each applies only when the task moved): the time
    the attempt ended, and the operation if the count finished it; ``None`` when the
    task was not as read (nothing written)."""
    assert change.attempt is not None and change.target is not None and task.request_id
    moved = update(_T).where(*where).values(change.values).returning(_T.c.id).cte("tt_moved")
    row = _attempt_row(task, change.attempt, now)
    columns = attempts_table.c
    written = select(
        *(
            (
                value if isinstance(value, ColumnElement) else literal(value, columns[key].type)
            ).label(key)
            for key, value in row.items()
        )
    ).select_from(moved)
    attempt = (
        insert(attempts_table)
        .from_select(list(row), written)
        .returning(columns.finished_at)
        .cte("tt_attempt")
    )
    counted, params = counted_with(moved, task.request_id, task.state, change.target.value)
    told = [
        func.pg_notify(CHANGES_CHANNEL, literal(changed)).label(f"tt_notify_{n}")
        for n, changed in enumerate(sorted({task.id, task.request_id}))
    ]
    statement = select(attempt.c.finished_at, *counted.c, *told).select_from(
        attempt.outerjoin(counted, true())
    )
    found = session.execute(statement, params).one_or_none()
    if found is None:
        return None
    operation = finish_counted(session.connection(), task.request_id, found)
    ended: datetime = found.finished_at
    return ended, [] if operation is None else [operation]


def _follow(session: Session, task: Task, ended: TaskState) -> None:
    """The tasks that run after ``task``, which just ended in ``ended``, follow it in the
    same transaction: counted down on a success (ready at 0: their start deadline
    counts from now, and they are published), failed ``dependency_failed`` otherwise,
    and so on down their own chains.

    They are the pending tasks of its spawn (same resource, operation and
    creation time) whose ``after`` names it, found in ``ix_tasktoolkit_tasks_resource``.
    """
    request = _T.c.request_id
    dependents = session.execute(
        select(_T.c.id, _T.c.rules).where(
            _T.c.resource_type == task.resource_type,
            _T.c.resource_id == task.resource_id,
            _T.c.created_at == task.created_at,
            request.is_(None) if task.request_id is None else request == task.request_id,
            _T.c.state == TaskState.PENDING.value,
            _T.c.waiting_on > 0,
            _T.c.after.contains(json.dumps(task.name), autoescape=True),
        )
    ).all()
    if not dependents:
        return
    if ended == TaskState.SUCCEEDED:
        _count_down(session, dependents)
        return
    why = f"{task.name} ({task.id}) {'failed' if ended == TaskState.FAILED else 'was cancelled'}"
    with_it = ended == TaskState.CANCELLED and session.info.get(_CANCELLING) == task.request_id

    def decide(dependent: Task, now: Moment) -> _Change | Exception:
        if with_it:  # its operation is cancelled: so is it
            return _move_from(TaskState.PENDING, dependent, TaskState.CANCELLED, now, {})
        return _move_from(
            TaskState.PENDING,
            dependent,
            TaskState.FAILED,
            now,
            _error(DEPENDENCY_FAILED, f"a task it runs after, {why}", None),
        )

    for dependent in dependents:
        try:
            _apply(session, dependent.id, decide, DEPENDENCY_FAILED)
        except (InvalidTransitionError, TaskNotFoundError):
            continue  # it ended (or went with its resource) meanwhile


def _release_exclusive(session: Session, task: Task) -> None:
    """The exclusive ``task`` ended: the next of its name on its resource, now ready, is
    published and its workers woken (see :func:`~tasktoolkit.orm._ready.next_exclusive`)."""
    ready = session.execute(
        next_exclusive(task).execution_options(populate_existing=True)
    ).scalars().all()
    record_ready(session, ready)


def _count_down(session: Session, dependents: Sequence[Any]) -> None:
    """One prerequisite of each of ``dependents`` succeeded: those with none left are ready."""
    now = db_now()
    last = _T.c.waiting_on == 1
    for dependent in dependents:
        timeout = row_rules(dependent.rules).start_timeout
        values: list[tuple[Any, Any]] = [
            (_T.c.not_before, case((last, now), else_=_T.c.not_before)),
            (_T.c.published_at, case((last, null()), else_=_T.c.published_at)),
        ]
        if timeout is not None:
            deadline = start_deadline(now, timeout)
            values.append((_T.c.start_deadline, case((last, deadline), else_=_T.c.start_deadline)))
        # Last: MariaDB assigns from left to right, each reading the values set before it.
        values.append((_T.c.waiting_on, _T.c.waiting_on - 1))
        _execute(
            session,
            update(_T)
            .where(
                _T.c.id == dependent.id,
                _T.c.state == TaskState.PENDING.value,
                _T.c.waiting_on > 0,
            )
            .ordered_values(*values),
        )
    ready = (
        session.execute(
            select(Task)
            .where(
                Task.id.in_(sorted(d.id for d in dependents)),
                Task.state == TaskState.PENDING.value,
                Task.waiting_on == 0,
            )
            .execution_options(populate_existing=True)
        )
        .scalars()
        .all()
    )
    record_ready(session, ready)


def _attempt_row(task: Task, outcome: dict[str, Any], now: Moment) -> dict[str, Any]:
    """The row of the attempt that ``task`` (as read, still ``running``) ends at ``now``."""
    return {
        "task_id": task.id,
        "number": task.attempts,
        "host": task.host,
        "started_at": task.started_at,
        "finished_at": now,
        "error_code": None,
        "error_message": None,
        "error_traceback": None,
        **outcome,
    }


def _end_attempt(
    session: Session, task: Task, outcome: dict[str, Any], now: Moment
) -> datetime | None:
    """Write the row of the attempt that ``task`` (as read, still ``running``) ends now;
    the time it ended (computed in the statement, returned where the database can)."""
    row = _attempt_row(task, outcome, now)
    statement = insert(attempts_table).values(row)
    if isinstance(now, datetime):
        session.execute(statement)
        return now
    if not session.get_bind().dialect.insert_returning:
        session.execute(statement)
        return None
    ended: datetime = session.execute(
        statement.returning(attempts_table.c.finished_at)
    ).scalar_one()
    return ended


def _attempt_of(target: TaskState, values: dict[str, Any]) -> dict[str, Any]:
    """The outcome of an attempt ended by a move to ``target`` writing ``values``."""
    attempt: dict[str, Any] = {"outcome": target.value}
    for key in ("error_code", "error_message", "error_traceback"):
        if key in values:
            attempt[key] = values[key]
    return attempt


_KNOWN = "tasktoolkit.known_tasks"
#: The operation whose tasks :func:`cancel_operation` is cancelling, in ``session.info``.
_CANCELLING = "tasktoolkit.cancelling"


@contextmanager
def known_task(session: Session, task: Task) -> Iterator[None]:
    """Within the block, changes of ``task`` in ``session`` start from this snapshot
    instead of reading the row (see :func:`_apply`)."""
    known: dict[str, Task] = session.info.setdefault(_KNOWN, {})
    known[task.id] = task
    try:
        yield
    finally:
        known.pop(task.id, None)


def _known(session: Session, task_id: str) -> Task | None:
    known: dict[str, Task] | None = session.info.get(_KNOWN)
    return None if not known else known.get(task_id)


def _as_read(task: Task) -> list[ColumnElement[bool]]:
    """The columns a decision reads, as in the snapshot ``task`` (every change already
    requires its attempt to be the one read)."""
    host = _T.c.host.is_(None) if task.host is None else _T.c.host == task.host
    return [_T.c.cancel_requested == bool(task.cancel_requested), host]


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


def _move(
    task: Task,
    target: TaskState,
    *,
    expected: TaskState | None,
    host: str | None,
    held: bool,
    now: Moment,
    values: dict[str, Any],
) -> _Change | Exception:
    """The change moving ``task`` (as read) to ``target`` at ``now``, or why it may not move."""
    current = parse_task_state(task.state)
    if (expected is not None and current != expected) or target not in TRANSITIONS[current]:
        return InvalidTransitionError(task.id, current.value, target.value)
    if held and task.host != host:
        return TaskNotHeldError(f"task {task.id} is held by {task.host!r}, not {host!r}")
    written: dict[str, Any] = {"state": target.value, "updated_at": now}
    # Started, lost and re-queued since our read (pending again, an attempt
    # later): the attempt we count from, or end, must be the one we read.
    where = [_T.c.attempts == task.attempts]
    if target == TaskState.RUNNING:
        if task.waiting_on:
            return InvalidTransitionError(task.id, f"{current.value}, waiting", target.value)
        where.append(_T.c.waiting_on == 0)  # no prerequisite left, still
        written.update(_started(now, host, previous=task.attempts))
    if target in TERMINAL_TASK_STATES:
        expires_at = row_rules(task.rules).expires_at(now, target.value)
        written.update(finished_at=now, expires_at=expires_at)
        if target == TaskState.SUCCEEDED:
            written["progress"] = 100
    if held:
        where.append(_T.c.host == host)
    written.update(values)
    ends_attempt = current == TaskState.RUNNING
    return _Change(written, where, target, _attempt_of(target, written) if ends_attempt else None)


def _requeue(
    task: Task, now: Moment, *, delay: timedelta, message: str, attempt: dict[str, Any]
) -> _Change:
    """The change putting a ``running`` task back to ``pending``, ready after ``delay``.

    Its next attempt starts afresh: no host, no progress; the one that ended
    is kept in its attempt row (``attempt``: its outcome and error). Its start
    deadline counts from the end of the backoff, when it becomes ready again.
    """
    not_before = later(now, delay)
    written = {
        "state": TaskState.PENDING.value,
        "updated_at": now,
        "host": None,
        "heartbeat_at": None,
        "started_at": None,
        "progress": None,
        "cancel_requested": False,
        "not_before": not_before,
        "start_deadline": start_deadline(not_before, row_rules(task.rules).start_timeout),
        "published_at": None,  # a queue bridge publishes it again
        "message": _message(message),
    }
    where = [_T.c.attempts == task.attempts, _T.c.host == task.host]
    return _Change(written, where, TaskState.PENDING, attempt)


def _retry_delay(task: Task) -> timedelta:
    """The backoff after the task's current attempt."""
    return row_rules(task.rules).delay(task.attempts)


def _started(now: Moment, host: str | None, *, previous: Any) -> dict[str, Any]:
    """What a start writes: ``pending`` -> ``running``, the attempt counted, held by ``host``.

    :param previous: the attempts before this one (a number, or the column). After
        the first, the message the re-queue wrote ("retrying in ...") ends with its wait.
    """
    written = {
        "state": TaskState.RUNNING.value,
        "updated_at": now,
        "started_at": now,
        "heartbeat_at": now,
        "attempts": previous + 1,
        "not_before": None,
    }
    if isinstance(previous, int):
        if previous:
            written["message"] = None
    else:
        written["message"] = case((previous > 0, null()), else_=_T.c.message)
    if host is not None:
        written["host"] = host
    return written


def start_oldest(
    session: Session,
    candidates: Select[Any],
    *,
    host: str,
    also: ColumnElement[Any],
) -> list[tuple[Task, Any]]:
    """Start ``candidates`` (a query of task ids, oldest first, locked ``FOR UPDATE SKIP
    LOCKED`` and limited to the tasks to start) in one statement: ``UPDATE ... FROM`` it
    materialized ``... RETURNING``. For PostgreSQL.

    The same move as :func:`start_task`, without reading the rows first: the
    locked rows are ``pending`` (the query says so, and the lock holds them),
    and the ``UPDATE`` checks it again. The start's times are the database's,
    returned with the rows.

    :param also: one more value to return per task (a scalar subquery on the row).
    :returns: the started tasks, oldest first, each with its ``also``.
    """
    # Materialized, so evaluated once: as "id IN (SELECT ... SKIP LOCKED)" the
    # subquery may run again per row, each run skipping the rows the last one
    # locked, and start more tasks than asked.
    first = candidates.cte("tt_claimed").prefix_with("MATERIALIZED")
    statement = (
        update(Task)
        .where(Task.id == first.c.id, Task.state == TaskState.PENDING.value)
        .values(_started(db_now(), host, previous=Task.attempts))
        .returning(Task, also)
    )
    rows = session.execute(
        statement, execution_options={"synchronize_session": False, "populate_existing": True}
    )
    started = sorted(((row[0], row[1]) for row in rows), key=lambda r: (r[0].created_at, r[0].id))
    for task, _ in started:
        _refresh_active_tasks(session, task)
    if started:
        # The start's time is the database's, returned with each row.
        moves = [
            change_of(task, TaskState.PENDING.value, moved_at=task.started_at)
            for task, _ in started
        ]
        record_moves(session, moves)
    return started


def transition(
    session: Session,
    task_id: str,
    to_state: TaskState | str,
    *,
    expected: TaskState | str | None = None,
    host: str | None = None,
    held: bool = False,
    values: dict[str, Any] | None = None,
) -> Task:
    """Move a task to ``to_state``; the general form of the moves below.

    :param expected: the state the caller believes the task is in; when given,
        the move is refused (:class:`InvalidTransitionError`) if it is in another.
    :param host: the worker taking the task (recorded on ``running``), or
        holding it (with ``held``).
    :param held: refuse the move (:class:`TaskNotHeldError`) unless the task
        is ``running`` on ``host``.
    :param values: more columns to set with the move, already checked.
    :returns: the task, with the values just written.
    """
    target = parse_task_state(to_state)
    expected_state = None if expected is None else parse_task_state(expected)
    if held:
        host, expected_state = check_host(host), TaskState.RUNNING
    extra = values or {}

    def decide(task: Task, now: Moment) -> _Change | Exception:
        return _move(
            task, target, expected=expected_state, host=host, held=held, now=now, values=extra
        )

    return _apply_as(session, task_id, decide, target.value, host if held else None)


def _apply_as(
    session: Session, task_id: str, decide: _Decide, what: str, holder: str | None
) -> Task:
    """:func:`_apply`; for a worker's report (``holder``), a refusal says who holds the task."""
    if holder is None:
        return _apply(session, task_id, decide, what)
    try:
        return _apply(session, task_id, decide, what)
    except (InvalidTransitionError, TaskNotHeldError):
        # The task is not running any more (the reaper failed or re-queued it):
        # for the worker, that is a task it does not hold.
        raise not_held(session, task_id, holder) from None


def not_held(session: Session, task_id: str, host: str) -> TaskNotHeldError:
    """The error for a report by ``host`` on a task it does not hold, saying who does."""
    row = session.execute(select(_T.c.state, _T.c.host).where(_T.c.id == task_id)).one_or_none()
    if row is None:
        raise TaskNotFoundError(f"no task {task_id!r}")
    where = f" on {row.host!r}" if row.host and row.host != host else ""
    return TaskNotHeldError(f"task {task_id} is not held by {host!r}: it is {row.state}{where}")


def start_task(session: Session, task_id: str, *, host: str | None = None) -> Task:
    """``pending`` -> ``running``, recording the worker ``host``."""
    return transition(session, task_id, TaskState.RUNNING, expected=TaskState.PENDING, host=host)


def start_ready(session: Session, task_id: str, *, host: str) -> Task:
    """``pending`` -> ``running`` for ``host``, a task named by its id (a queue bridge's
    delivery): refused (:class:`InvalidTransitionError`) unless it is ready, its
    prerequisites succeeded and no other task of its exclusive name runs, or waits from
    earlier, on its resource (:mod:`tasktoolkit.orm._ready`)."""
    holder = check_host(host)

    def decide(task: Task, now: Moment) -> _Change | Exception:
        if task.state == TaskState.PENDING and task.exclusive and behind(session, task.id):
            return InvalidTransitionError(task.id, "pending, waiting: exclusive", "running")
        return _move(
            task,
            TaskState.RUNNING,
            expected=TaskState.PENDING,
            host=holder,
            held=False,
            now=now,
            values={},
        )

    return _apply(session, task_id, decide, TaskState.RUNNING.value)


def succeed_task(
    session: Session,
    task_id: str,
    *,
    message: str | None = None,
    result: dict[str, Any] | None = None,
    host: str | None = None,
) -> Task:
    """``running`` -> ``succeeded`` (progress 100).

    :param result: what the work produced, shown in the task's view: a JSON
        object of at most 16 KiB (:class:`InvalidResultError` otherwise, before
        anything is written).
    :param host: the worker holding the task (:class:`TaskNotHeldError` if it does not).
    """
    values = {} if result is None else {"result": check_result(result)}
    return _end_run(session, task_id, TaskState.SUCCEEDED, message, host, values)


def _end_run(
    session: Session,
    task_id: str,
    target: TaskState,
    message: str | None,
    host: str | None,
    values: dict[str, Any] | None = None,
) -> Task:
    """``running`` -> ``target`` with an optional message; held by ``host`` when given."""
    written = dict(values or {})
    if message is not None:
        written["message"] = _message(message)
    return transition(
        session,
        task_id,
        target,
        expected=TaskState.RUNNING,
        host=host,
        held=host is not None,
        values=written,
    )


def fail_task(
    session: Session,
    task_id: str,
    *,
    code: str,
    message: str,
    traceback: str | None = None,
    host: str | None = None,
    retry: bool = False,
) -> Task:
    """``pending`` or ``running`` -> ``failed`` with an error code and message.

    :param code: a short machine-readable code, 1 to 64 characters
        (:class:`InvalidErrorCodeError` otherwise, before anything is written).
    :param message: shown to API consumers (cut at 4000 characters).
    :param traceback: kept for admins only (its last 16000 characters).
    :param host: the worker holding the task (:class:`TaskNotHeldError` if it does not).
    :param retry: the failure is retryable: a ``running`` task whose
        ``max_attempts`` allow another attempt goes back to ``pending``, ready
        again after its backoff (``not_before``); the last failure is final.
    """
    error = _error(code, message, traceback)
    held = host is not None
    holder = check_host(host) if held else None

    def decide(task: Task, now: Moment) -> _Change | Exception:
        if (
            retry
            and task.state == TaskState.RUNNING
            and task.attempts < task.max_attempts
            and not task.cancel_requested  # asked to stop: no attempt after this one
            and (not held or task.host == holder)
        ):
            delay = _retry_delay(task)
            why = f"attempt {task.attempts} of {task.max_attempts} failed ({code})"
            return _requeue(
                task,
                now,
                delay=delay,
                message=f"{why}; retrying in {delay.total_seconds():.1f} s",
                attempt={"outcome": TaskState.FAILED.value, **error},
            )
        expected = TaskState.RUNNING if held else None
        return _move(
            task,
            TaskState.FAILED,
            expected=expected,
            host=holder,
            held=held,
            now=now,
            values=error,
        )

    return _apply_as(session, task_id, decide, TaskState.FAILED.value, holder)


def hand_back(session: Session, task_id: str, *, host: str) -> Task:
    """``running`` -> ``pending`` at once: the worker ``host`` stops before finishing the task.

    Not a failed attempt: the attempt is recorded as ``handed_back`` and the
    task may still start ``max_attempts`` times after it. A task whose
    cancellation was asked is cancelled instead.
    """
    holder = check_host(host)

    def decide(task: Task, now: Moment) -> _Change | Exception:
        if task.state != TaskState.RUNNING or task.host != holder:
            return TaskNotHeldError(f"task {task.id} is not held by {holder!r}")
        if task.cancel_requested:  # nobody should take it up again: it was asked to stop
            message = f"cancelled as requested (its worker {holder} stopped)"
            return _move_from(
                TaskState.RUNNING, task, TaskState.CANCELLED, now, {"message": message}
            )
        change = _requeue(
            task,
            now,
            delay=timedelta(0),
            message=f"handed back by {holder}: its worker stopped",
            attempt={"outcome": HANDED_BACK},
        )
        change.values["max_attempts"] = task.max_attempts + 1
        return change

    return _apply_as(session, task_id, decide, TaskState.PENDING.value, holder)


def reap_lost(session: Session, task_id: str) -> Task:
    """Take a ``running`` task whose worker stopped heartbeating for longer than its timeout
    (on the database's clock).

    It is cancelled when cancellation was asked (nobody is left to stop), else
    re-queued after its backoff while its attempts allow, else failed
    ``worker_lost``; the lost attempt is recorded as failed ``worker_lost``.
    Refused (:class:`InvalidTransitionError`) when the task is not lost (any
    more): a heartbeat that lands first keeps it with its worker. Whether the
    reapers have watched long enough to call a worker lost is the reaper's
    (:mod:`tasktoolkit.orm._reaper`).
    """

    def decide(task: Task, moment: Moment) -> _Change | Exception:
        now = _read_time(moment)
        seen = task.heartbeat_at or task.started_at or task.updated_at
        if (
            task.state != TaskState.RUNNING
            or seen + timedelta(seconds=task.heartbeat_timeout) >= now
        ):
            return InvalidTransitionError(task.id, task.state, "lost")
        why = f"worker {task.host} sent no heartbeat for {task.heartbeat_timeout} s"
        lost = {"error_code": WORKER_LOST, "error_message": why, "error_traceback": None}
        if task.cancel_requested:
            change = _move_from(
                TaskState.RUNNING,
                task,
                TaskState.CANCELLED,
                now,
                {"message": f"{why}; cancelled as requested"},
            )
        elif task.attempts < task.max_attempts:
            delay = _retry_delay(task)
            change = _requeue(
                task,
                now,
                delay=delay,
                message=f"{why}; re-queued (attempt {task.attempts} of {task.max_attempts} lost)",
                attempt={"outcome": TaskState.FAILED.value, **lost},
            )
        else:
            change = _move_from(TaskState.RUNNING, task, TaskState.FAILED, now, lost)
        if isinstance(change, Exception):
            return change
        # A heartbeat since our read keeps the task with its worker.
        change.where.append(
            _T.c.heartbeat_at == task.heartbeat_at
            if task.heartbeat_at
            else _T.c.heartbeat_at.is_(None)
        )
        return change

    return _apply(session, task_id, decide, "lost")


def _move_from(
    expected: TaskState, task: Task, target: TaskState, now: Moment, values: dict[str, Any]
) -> _Change | Exception:
    """:func:`_move` of a task no worker holds (the reaper's, an API's cancel)."""
    return _move(task, target, expected=expected, host=None, held=False, now=now, values=values)


def fail_not_started(
    session: Session, task_id: str, *, start_timeout: timedelta | None = None
) -> Task:
    """``pending`` -> ``failed`` with code ``not_started``: no worker started it in time
    (its start deadline passed on the database's clock).

    :param start_timeout: also fail it when it was spawned longer ago than this
        and never started, whatever its own deadline (an operator's bound).
    :raises InvalidTransitionError: it is not pending past its deadline (any more).
    """

    def decide(task: Task, moment: Moment) -> _Change | Exception:
        now = _read_time(moment)
        deadline = task.start_deadline
        overdue = deadline is not None and deadline <= now
        bounded = (
            start_timeout is not None
            and not task.waiting_on
            and task.not_before is None
            and task.created_at <= now - start_timeout
        )
        if task.state != TaskState.PENDING or not (overdue or bounded):
            return InvalidTransitionError(task.id, task.state, NOT_STARTED)
        waited = (now - (task.not_before or task.created_at)).total_seconds()
        why = f"no worker started it within its start timeout ({waited:.0f} s pending)"
        return _move_from(
            TaskState.PENDING, task, TaskState.FAILED, now, _error(NOT_STARTED, why, None)
        )

    return _apply(session, task_id, decide, NOT_STARTED)


def acknowledge_cancel(
    session: Session,
    task_id: str,
    *,
    message: str | None = None,
    host: str | None = None,
) -> Task:
    """``running`` -> ``cancelled``: the worker stopped because it was asked to.

    :param host: the worker holding the task (:class:`TaskNotHeldError` if it does not).
    """
    return _end_run(session, task_id, TaskState.CANCELLED, message, host)


def cancel_task(session: Session, task_id: str) -> Task:
    """Cancel a task: a ``pending`` one at once, a ``running`` one is asked to stop.

    A running task gets ``cancel_requested``; its worker sees it and calls
    :func:`acknowledge_cancel`. A terminal task raises :class:`InvalidTransitionError`.
    """

    def decide(task: Task, now: Moment) -> _Change | Exception:
        if task.state == TaskState.RUNNING:
            return _Change({"cancel_requested": True, "updated_at": now})
        return _move_from(TaskState.PENDING, task, TaskState.CANCELLED, now, {})

    task = _apply(session, task_id, decide, TaskState.CANCELLED.value)
    if task.state == TaskState.RUNNING:
        queue_cancel_asked(session, change_of(task, task.state))
    return task


def cancel_operation(session: Session, operation_id: str) -> list[str]:
    """Cancel every active task of a running operation, each with :func:`cancel_task`.

    Pending tasks are cancelled at once, running ones asked to stop; a task
    that ended (or went) since it was read is left as it is. The operation
    then ends as its tasks do. No commit: the caller's transaction holds every
    move, so they commit together.

    :returns: the ids of the tasks cancelled or asked to stop.
    :raises OperationNotFoundError: no such operation.
    :raises OperationTransitionError: the operation has ended.
    """
    state = session.execute(
        select(_OPERATIONS.c.state).where(_OPERATIONS.c.id == operation_id)
    ).scalar()
    if state is None:
        raise OperationNotFoundError(f"no operation {operation_id!r}")
    if state != OperationState.RUNNING:
        raise OperationTransitionError(operation_id, state, OperationState.CANCELLED.value)
    # Every task row is locked before any count of the operation's row moves,
    # in the order a worker takes them (its task, then the operation): taking
    # the operation's row first, with a task still to lock, deadlocks with a
    # worker finishing that task.
    active = session.execute(
        select(_T.c.id)
        .where(_T.c.request_id == operation_id, _T.c.state.in_(ACTIVE_TASK_STATES))
        .order_by(_T.c.id)
        .with_for_update()
    ).scalars()
    # The tasks that wait on one cancelled here are cancelled with it, not failed.
    session.info[_CANCELLING] = operation_id
    try:
        return _cancel_each(session, list(active))
    finally:
        session.info.pop(_CANCELLING, None)


def _cancel_each(session: Session, task_ids: list[str]) -> list[str]:
    """:func:`cancel_task` each of ``task_ids``; those cancelled or asked to stop."""
    cancelled = []
    for task_id in task_ids:
        try:
            cancel_task(session, task_id)
        except InvalidTransitionError as exc:
            if exc.current == TaskState.CANCELLED:  # with a task it waited on, just now
                cancelled.append(task_id)
            continue  # it finished meanwhile
        except TaskNotFoundError:
            continue  # it went with its resource meanwhile
        cancelled.append(task_id)
    return cancelled


#: What a task may be re-run from.
RERUNNABLE = frozenset({TaskState.FAILED.value, TaskState.CANCELLED.value})


def _rerun(task: Task, now: Moment, request_id: str | None) -> _Change | Exception:
    """The change putting a ``failed`` or ``cancelled`` task back to ``pending``, in the
    operation ``request_id`` (the re-run's; ``None``: none).

    Its attempts are kept (rows and count), and its name's attempts are
    counted afresh from them; nothing of its last run is left on the task
    (error, result, host, progress, times). Ready at once: its start deadline
    counts from now, as a hand-back's does.
    """
    if task.state not in RERUNNABLE:
        return NothingToRerunError(
            f"task {task.id} is {task.state}: only a failed or cancelled task is re-run"
        )
    info = _REGISTRY.get(task.resource_type)
    declared = DEFAULT_RULES if info is None else info.cls.task_rules(task.name)
    written: dict[str, Any] = {
        "state": TaskState.PENDING.value,
        "request_id": request_id,
        "updated_at": now,
        "host": None,
        "heartbeat_at": None,
        "started_at": None,
        "finished_at": None,
        "expires_at": None,
        "progress": None,
        "message": None,
        "result": None,
        "error_code": None,
        "error_message": None,
        "error_traceback": None,
        "cancel_requested": False,
        "max_attempts": task.attempts + declared.max_attempts,
        "not_before": now,
        # A task that waits on prerequisites has no start deadline until it is ready.
        "start_deadline": None
        if task.waiting_on
        else start_deadline(now, row_rules(task.rules).start_timeout),
        "published_at": None,  # a queue bridge publishes it again
    }
    return _Change(written, [_T.c.attempts == task.attempts], TaskState.PENDING)


def rerun_task(session: Session, task_id: str) -> Task:
    """Re-run a ``failed`` or ``cancelled`` task: back to ``pending``, as part of the
    operation of the request being served (the re-run is its own operation), or of
    none outside a request.

    The operation it ended in keeps its counts and its ``error``; the task now
    counts in the re-run's operation, which touched its resource. No commit.

    :raises NothingToRerunError: it is not failed or cancelled (any more).
    :raises TaskNotFoundError: no such task.
    """
    ctx = context.current()
    request_id = ctx.operation_id if ctx is not None else None
    ended_in: list[str | None] = [None]

    def decide(task: Task, now: Moment) -> _Change | Exception:
        ended_in[0] = task.request_id
        return _rerun(task, now, request_id)

    task = _apply(
        session,
        task_id,
        decide,
        TaskState.PENDING.value,
        opening=ctx.operation if ctx is not None else None,
    )
    if request_id is not None and ended_in[0] not in (None, request_id):
        session.execute(
            update(_OPERATIONS)
            .where(_OPERATIONS.c.id == request_id, _OPERATIONS.c.retry_of.is_(None))
            .values(retry_of=ended_in[0])
        )
    if task.awaited:
        _rearm(session, task, ended_in[0])
    return task


def _rearm(session: Session, task: Task, ended_in: str | None) -> None:
    """``task`` runs again: so do the tasks of its spawn that failed ``dependency_failed``
    after it (in ``ended_in``, the operation it ended in), each waiting on it again, and
    down their chains (:func:`rerun_task`); one whose other prerequisites failed or were
    cancelled stays failed."""
    request = _T.c.request_id
    spawn = (
        _T.c.resource_type == task.resource_type,
        _T.c.resource_id == task.resource_id,
        _T.c.created_at == task.created_at,
        request.is_(None) if ended_in is None else request == ended_in,
    )
    dependents = session.execute(
        select(_T.c.id, _T.c.after).where(
            *spawn,
            _T.c.state == TaskState.FAILED.value,
            _T.c.error_code == DEPENDENCY_FAILED,
            _T.c.after.contains(json.dumps(task.name), autoescape=True),
        )
    ).all()
    for dependent_id, after in dependents:
        others = [name for name in json.loads(after) if name != task.name]
        ended = select(_T.c.id).where(
            *spawn, _T.c.name.in_(others), _T.c.state.in_(RERUNNABLE)
        )
        if others and session.execute(ended.limit(1)).first() is not None:
            continue  # another of its prerequisites failed: it stays failed
        try:
            rerun_task(session, dependent_id)
        except (NothingToRerunError, TaskNotFoundError):
            continue  # re-run by another request (or gone with its resource) meanwhile


def rerun_operation(session: Session, operation_id: str) -> list[str]:
    """Re-run every ``failed`` or ``cancelled`` task of an operation, each with
    :func:`rerun_task`, in the operation of the request being served. No commit.

    :returns: the ids of the tasks re-run, in id order.
    :raises OperationNotFoundError: no such operation.
    :raises NothingToRerunError: no task of it is failed or cancelled (or left).
    """
    found = session.execute(
        select(_OPERATIONS.c.id).where(_OPERATIONS.c.id == operation_id)
    ).scalar()
    if found is None:
        raise OperationNotFoundError(f"no operation {operation_id!r}")
    # The rows are locked in id order, the order every re-run and cancel takes them.
    ended = session.execute(
        select(_T.c.id)
        .where(_T.c.request_id == operation_id, _T.c.state.in_(RERUNNABLE))
        .order_by(_T.c.id)
        .with_for_update()
    ).scalars()
    rerun = []
    for task_id in list(ended):
        try:
            rerun_task(session, task_id)
        except (NothingToRerunError, TaskNotFoundError):
            continue  # re-run by another request (or gone with its resource) meanwhile
        rerun.append(task_id)
    if not rerun:
        raise NothingToRerunError(
            f"operation {operation_id} has no failed or cancelled task to re-run"
        )
    return rerun


def report_progress(
    session: Session,
    task_id: str,
    progress: int | None,
    *,
    message: str | None = None,
    host: str | None = None,
) -> None:
    """Record progress (0..100) and an optional message on a task still in progress.

    One statement, a compare-and-set on the task being active (and, with
    ``host``, held by it: the report then counts as a heartbeat too), its
    times the database's.

    :raises InvalidProgressError: ``progress`` is not ``None`` or 0..100.
    :raises TaskNotHeldError: with ``host``, the task is not running on it.
    :raises InvalidTransitionError: without ``host``, the task is terminal.
    """
    progress = check_progress(progress)
    values: dict[str, Any] = {"updated_at": db_now()}
    where = [_T.c.id == task_id, _T.c.state.in_(ACTIVE_TASK_STATES)]
    if host is not None:
        host = check_host(host)
        values["heartbeat_at"] = db_now()
        where += [_T.c.state == TaskState.RUNNING.value, _T.c.host == host]
    if progress is not None:
        values["progress"] = progress
    if message is not None:
        values["message"] = _message(message)
    statement = update(_T).where(*where).values(values)
    if _is_postgresql(session):
        # Waiting requests hear of it: the task, and its operation (whose view shows it).
        changed = _execute(session, statement.returning(_T.c.request_id)).all()
        if changed:
            notify_changed(session.connection(), [task_id, changed[0].request_id])
            return
    elif _execute(session, statement).rowcount == 1:
        return
    if host is not None:
        raise not_held(session, task_id, host)
    state = session.execute(select(_T.c.state).where(_T.c.id == task_id)).scalar()
    if state is None:
        raise TaskNotFoundError(f"no task {task_id!r}")
    raise InvalidTransitionError(task_id, state, "progress")


def note_refused(session: Session, task_id: str, *, attempt: int, host: str, outcome: str) -> None:
    """Add to the error of an attempt that was taken from its worker (the reaper found
    it lost) that the worker ``host`` reported ``outcome`` after all, not recorded.

    Only the attempt ``host`` ran is touched, and only once it has ended: the
    worker's word is kept on its own attempt, never on the task.
    """
    note = f"then its worker {host} reported {outcome}: not recorded"
    message = attempts_table.c.error_message
    session.execute(
        update(attempts_table)
        .where(
            attempts_table.c.task_id == task_id,
            attempts_table.c.number == attempt,
            attempts_table.c.host == host,
        )
        .values(error_message=case((message.is_(None), note), else_=message + "; " + note))
    )
