"""The worker API: claim a task, heartbeat, report progress, finish it.

A worker is identified by its ``host`` string (by default ``<hostname>:<pid>``,
unique per process); a task it claims is *held* by it while the task is
``running`` with that host. Every report after the claim (heartbeat,
progress, success, failure) is refused with :class:`TaskNotHeldError`, and
writes nothing, when the task is no longer held: the reaper re-queued or
failed it, or another worker took it after a re-queue.

Claiming takes the oldest pending task among the given names. On PostgreSQL,
MariaDB 10.6+ and MySQL 8 it selects with ``FOR UPDATE SKIP LOCKED``, so
concurrent workers pass over each other's candidates instead of queueing on
them; elsewhere (SQLite) it tries candidates oldest first with the
compare-and-set of :func:`~tasktoolkit.orm.transition`. Either way a task is
started by exactly one worker.

Two layers:

- functions taking a :class:`~sqlalchemy.orm.Session` (:func:`claim_task`,
  :func:`heartbeat`, and the moves of :mod:`tasktoolkit.orm._transitions`
  given a ``host``), which never commit;
- :class:`Worker`, which runs each of them in a short transaction of its own,
  and :class:`Job`, a claimed task whose ``with`` block records the outcome.

Example::

    worker = Worker(engine, ["l2_wiring", "dhcp_provisioning"])
    while (job := worker.claim()) is not None:
        with job:                       # success, failure or cancellation recorded on exit
            for step in range(10):
                job.check_cancelled()   # raises TaskCancelRequested when asked to stop
                do_step(job.resource_id, step)
                job.progress(10 * (step + 1), f"step {step + 1} of 10")
"""

from __future__ import annotations

import os
import socket
import traceback as traceback_module
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, cast

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.errors import (
    InvalidTransitionError,
    TaskCancelRequested,
    TaskFailure,
    TaskNotFoundError,
    TaskNotHeldError,
)
from tasktoolkit.orm._deadline import DEFAULT_DEADLINE, check_deadline
from tasktoolkit.orm._engine import supports_skip_locked
from tasktoolkit.orm._records import Task
from tasktoolkit.orm._records import tasks_table as _T
from tasktoolkit.orm._retry import RetryPredicate, in_transaction, short_sessions
from tasktoolkit.orm._states import TaskState
from tasktoolkit.orm._transitions import (
    acknowledge_cancel,
    check_host,
    fail_task,
    not_held,
    report_progress,
    succeed_task,
    transition,
)
from tasktoolkit.orm._types import utcnow

__all__ = ["WORKER_ERROR", "Job", "Worker", "cancel_requested", "claim_task", "heartbeat"]

_R = TypeVar("_R")
#: Candidates read at once by the compare-and-set claim (SQLite).
_CANDIDATES = 16
_MAX_ROUNDS = 50
#: The error code of a task whose worker code raised an unexpected exception.
WORKER_ERROR = "worker_error"


def _check_names(names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    checked = list(dict.fromkeys(names))
    if not checked or not all(isinstance(n, str) and n for n in checked):
        raise ValueError(f"claim needs one or more task names, got {checked!r}")
    return checked


def claim_task(
    session: Session, names: Iterable[str], *, host: str, now: datetime | None = None
) -> Task | None:
    """Start the oldest pending task named one of ``names``, held by ``host``.

    Call it at the start of a transaction and commit soon after: on
    PostgreSQL and MariaDB the claimed row stays locked until then.

    :returns: the started task, or ``None`` when no pending task is left.
    """
    wanted = _check_names(names)
    host = check_host(host)
    query = (
        select(_T.c.id)
        .where(_T.c.state == TaskState.PENDING.value, _T.c.name.in_(wanted))
        .order_by(_T.c.created_at, _T.c.id)
    )
    skip_locked = supports_skip_locked(session)
    for _ in range(_MAX_ROUNDS):
        if skip_locked:
            found = session.execute(query.limit(1).with_for_update(skip_locked=True)).scalar()
            candidates = [] if found is None else [found]
        else:
            candidates = list(session.execute(query.limit(_CANDIDATES)).scalars())
        if not candidates:
            return None
        for task_id in candidates:
            try:
                return transition(
                    session,
                    task_id,
                    TaskState.RUNNING,
                    expected=TaskState.PENDING,
                    host=host,
                    now=now,
                )
            except (InvalidTransitionError, TaskNotFoundError):
                continue  # another worker took it (or its resource went): try the next
    return None


def heartbeat(session: Session, task_id: str, *, host: str, now: datetime | None = None) -> bool:
    """Record that ``host`` still works on the task.

    A heartbeat is not a change API consumers see, so ``updated_at`` stays.

    :returns: whether cancellation of the task was asked.
    :raises TaskNotHeldError: the task is not running on ``host`` (nothing written).
    """
    host = check_host(host)
    held = [_T.c.id == task_id, _T.c.state == TaskState.RUNNING.value, _T.c.host == host]
    result = cast(
        CursorResult[Any],
        session.execute(
            update(_T).where(*held).values(heartbeat_at=now or utcnow()),
            execution_options={"synchronize_session": False},
        ),
    )
    if result.rowcount != 1:
        raise not_held(session, task_id, host)
    return cancel_requested(session, task_id)


def cancel_requested(session: Session, task_id: str) -> bool:
    """Whether cancellation of the task was asked (it is cancelled or asked to stop)."""
    row = session.execute(
        select(_T.c.state, _T.c.cancel_requested).where(_T.c.id == task_id)
    ).one_or_none()
    if row is None:
        raise TaskNotFoundError(f"no task {task_id!r}")
    return bool(row.cancel_requested) or row.state == TaskState.CANCELLED.value


# -- the transaction-per-call layer ------------------------------------------


class Worker:
    """A worker process's handle on the database: each call is one short transaction.

    :param bind: an engine, or a ``sessionmaker`` of the host app.
    :param names: the task names this worker does (for :meth:`claim`).
    :param host: the worker's identity; ``<hostname>:<pid>`` by default. Give
        each thread of a process its own if several claim tasks.
    :param deadline: seconds each of its own transactions may take; one whose
        database does not answer in time is given up and run once more on a
        fresh connection, then raises SQLAlchemy's ``OperationalError``.
        ``None``: no limit.
    :param retryable: more errors on which a call's transaction is run again
        (see :func:`~tasktoolkit.orm.is_retryable`), for an engine whose errors
        the toolkit does not know.
    """

    def __init__(
        self,
        bind: Engine | sessionmaker[Session],
        names: Iterable[str] = (),
        *,
        host: str | None = None,
        deadline: float | None = DEFAULT_DEADLINE,
        retryable: RetryPredicate | None = None,
    ) -> None:
        if isinstance(bind, Engine):
            self._sessions: sessionmaker[Session] = short_sessions(bind)
        elif isinstance(bind, sessionmaker):
            self._sessions = bind
        else:
            raise TypeError(f"Worker needs an Engine or a sessionmaker, got {bind!r}")
        self.names: tuple[str, ...] = tuple(names) if not isinstance(names, str) else (names,)
        self.host = check_host(self.default_host() if host is None else host)
        self.deadline = check_deadline(deadline)
        if retryable is not None and not callable(retryable):
            raise TypeError(f"retryable must be callable, got {retryable!r}")
        self.retryable = retryable

    @staticmethod
    def default_host() -> str:
        """``<hostname>:<pid>``: a worker identity unique per process."""
        return f"{socket.gethostname()}:{os.getpid()}"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in a transaction, committed at the end (rolled back on error)."""
        with self._sessions() as session, session.begin():
            yield session

    def _run(self, work: Callable[[Session], _R], session: Session | None = None) -> _R:
        """``work`` in ``session`` (the caller's transaction), or in a transaction of its
        own, run again when it loses a lock race."""
        if session is not None:
            return work(session)
        return in_transaction(self._sessions, work, seconds=self.deadline, predicate=self.retryable)

    def claim(self, names: Iterable[str] | None = None) -> Job | None:
        """Start the oldest pending task among ``names`` (default: the worker's).

        :returns: the claimed :class:`Job`, or ``None`` when nothing is pending.
        """
        wanted = self.names if names is None else names

        def claim(session: Session) -> Job | None:
            task = claim_task(session, wanted, host=self.host)
            return None if task is None else Job._of(self, task)

        return self._run(claim)

    def start(self, task_id: str) -> Job:
        """Start one given pending task (``pending`` -> ``running``) for this worker.

        :raises InvalidTransitionError: the task is not pending.
        """

        def start(session: Session) -> Job:
            task = transition(
                session, task_id, TaskState.RUNNING, expected=TaskState.PENDING, host=self.host
            )
            return Job._of(self, task)

        return self._run(start)

    def heartbeat(self, task_id: str) -> bool:
        """See :func:`heartbeat`; returns whether cancellation was asked."""
        return self._run(lambda session: heartbeat(session, task_id, host=self.host))

    def progress(self, task_id: str, progress: int | None, message: str | None = None) -> None:
        """See :func:`report_progress`."""
        self._run(
            lambda session: report_progress(
                session, task_id, progress, host=self.host, message=message
            )
        )

    def cancel_requested(self, task_id: str) -> bool:
        """See :func:`cancel_requested`."""
        return self._run(lambda session: cancel_requested(session, task_id))

    def succeed(
        self,
        task_id: str,
        message: str | None = None,
        *,
        result: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> None:
        """``running`` -> ``succeeded``.

        :param result: a JSON object of at most 16 KiB, shown in the task's view.
        :param session: do it in this session's transaction, with the host's own
            changes (it then commits or rolls back with them), not in one of its own.
        """
        self._run(
            lambda s: succeed_task(s, task_id, host=self.host, message=message, result=result),
            session,
        )

    def fail(
        self,
        task_id: str,
        code: str,
        message: str,
        traceback: str | None = None,
        *,
        session: Session | None = None,
    ) -> None:
        """``running`` -> ``failed``; refused before any write unless ``code`` has 1 to 64
        characters. ``session`` as for :meth:`succeed`."""
        self._run(
            lambda s: fail_task(
                s, task_id, host=self.host, code=code, message=message, traceback=traceback
            ),
            session,
        )

    def acknowledge_cancel(
        self, task_id: str, message: str | None = None, *, session: Session | None = None
    ) -> None:
        """``running`` -> ``cancelled``: stopped as asked. ``session`` as for :meth:`succeed`."""
        self._run(
            lambda s: acknowledge_cancel(s, task_id, host=self.host, message=message), session
        )


@dataclass
class Job:
    """A task a :class:`Worker` holds: report on it, and finish it once.

    Used as a context manager, it records the outcome of the ``with`` block:

    - the block ends normally: ``succeeded`` (unless the block finished the
      job itself);
    - it raises :class:`TaskCancelRequested` (see :meth:`check_cancelled`):
      ``cancelled``; the exception is swallowed;
    - it raises :class:`TaskFailure`: ``failed`` with the failure's code and
      message; swallowed;
    - it raises any other ``Exception``: ``failed`` with code ``worker_error``,
      the exception's message and its traceback (for admins); re-raised;
    - a ``BaseException`` such as ``KeyboardInterrupt`` records nothing: the
      task stays running until the reaper re-queues or fails it.

    When the task is no longer held (the reaper took it away), the outcome of
    a failing block cannot be recorded: the original exception propagates
    with a note saying so.
    """

    worker: Worker = field(repr=False)
    id: str
    name: str
    resource_type: str
    resource_id: str
    request_id: str | None
    attempts: int
    max_attempts: int
    heartbeat_timeout: int
    #: Whether the job was finished (through this object).
    finished: bool = False

    @classmethod
    def _of(cls, worker: Worker, task: Task) -> Job:
        return cls(
            worker,
            task.id,
            task.name,
            task.resource_type,
            task.resource_id,
            task.request_id,
            task.attempts,
            task.max_attempts,
            task.heartbeat_timeout,
        )

    def heartbeat(self) -> bool:
        """Record a heartbeat; returns whether cancellation was asked."""
        return self.worker.heartbeat(self.id)

    def progress(self, progress: int | None, message: str | None = None) -> None:
        """Record progress (0..100) and a message; counts as a heartbeat."""
        self.worker.progress(self.id, progress, message)

    def cancel_requested(self) -> bool:
        """Whether cancellation was asked."""
        return self.worker.cancel_requested(self.id)

    def check_cancelled(self) -> None:
        """Record a heartbeat; raise :class:`TaskCancelRequested` if asked to stop."""
        if self.heartbeat():
            raise TaskCancelRequested(f"cancellation of task {self.id} was asked")

    def succeed(
        self,
        message: str | None = None,
        *,
        result: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> None:
        """Finish as ``succeeded``; in ``session``'s transaction when given.

        :param result: what the work produced (a JSON object of at most 16 KiB,
            :class:`~tasktoolkit.errors.InvalidResultError` otherwise), shown
            as the task's ``result``.

        Example (the success and the host's own change commit together)::

            with worker.transaction() as session:
                job.succeed("unbound", result={"mac": mac}, session=session)
                session.execute(delete(Port).where(Port.id == job.resource_id))
        """
        self.worker.succeed(self.id, message, result=result, session=session)
        self.finished = True

    def fail(
        self,
        code: str,
        message: str,
        traceback: str | None = None,
        *,
        session: Session | None = None,
    ) -> None:
        """Finish as ``failed`` with an error code and message; ``session`` as for
        :meth:`succeed`."""
        self.worker.fail(self.id, code, message, traceback, session=session)
        self.finished = True

    def acknowledge_cancel(
        self, message: str | None = None, *, session: Session | None = None
    ) -> None:
        """Finish as ``cancelled`` (stopped as asked); ``session`` as for :meth:`succeed`."""
        self.worker.acknowledge_cancel(self.id, message, session=session)
        self.finished = True

    def __enter__(self) -> Job:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self.finished:
            return False
        if exc is None:
            self.succeed()
            return False
        if not isinstance(exc, Exception):
            return False  # shutting down: leave the task to the reaper
        try:
            if isinstance(exc, TaskCancelRequested):
                self.acknowledge_cancel("cancelled as requested")
                return True
            if isinstance(exc, TaskFailure):
                self.fail(exc.error_code, exc.message, _format(exc))
                return True
            self.fail(WORKER_ERROR, str(exc) or type(exc).__name__, _format(exc))
        except TaskNotHeldError as lost:
            exc.add_note(f"tasktoolkit: outcome not recorded: {lost}")
        return False


def _format(exc: BaseException) -> str:
    return "".join(traceback_module.format_exception(exc))
