"""The worker API: claim a task, heartbeat, report progress, finish it.

A worker is identified by its ``host`` string (by default ``<hostname>:<pid>``,
unique per process); a task it claims is *held* by it while the task is
``running`` with that host. Every report after the claim (heartbeat,
progress, success, failure) is refused with :class:`TaskNotHeldError`, and
writes nothing, when the task is no longer held: the reaper re-queued or
failed it, or another worker took it after a re-queue.

Claiming takes the oldest task among the given names that is ready to run
(the one rule of :mod:`tasktoolkit.orm._ready`: a retry's backoff is over, on
the database's clock). On PostgreSQL, MariaDB 10.6+ and MySQL 8 it selects
with ``FOR UPDATE SKIP LOCKED``, so concurrent workers pass over each other's
candidates instead of queueing on them; elsewhere (SQLite) it tries
candidates oldest first with the compare-and-set of
:func:`~tasktoolkit.orm.transition`. Either way a task is started by exactly
one worker. Every time a worker writes (its start, heartbeats, progress, its
finish) is the database's, never its host's (:mod:`tasktoolkit.orm._clock`).

Two layers:

- functions taking a :class:`~sqlalchemy.orm.Session` (:func:`claim_task`,
  :func:`heartbeat`, and the moves of :mod:`tasktoolkit.orm._transitions`
  given a ``host``), which never commit;
- :class:`Worker`, which claims and starts tasks, each call a short
  transaction of its own, and :class:`Job`, the one handle on a task it
  holds: its reports, and its outcome (recorded when its ``with`` block ends).

While a job's ``with`` block runs, the job's request context is bound
(:mod:`tasktoolkit.context`), so log records carry its request id, operation
id and global request id (:class:`~tasktoolkit.middleware.RequestIdLogFilter`).
A job's outcome survives a short database outage: recording it is tried
again, with backoff, for as long as the task is still held (its heartbeat
timeout since the last contact); a refused outcome (the reaper took the task
meanwhile) is said once, in a log line and on the attempt. An outage is
logged once when it starts and once when it ends, never a traceback per try.
A worker asked to stop (:meth:`Worker.stop`) claims no more, lets its jobs
finish within a grace period, and hands back those still running then as
``pending`` (not a failed attempt).

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

import functools
import logging
import math
import os
import socket
import threading
import time
import traceback as traceback_module
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar, cast

from sqlalchemy import Select, select, union_all, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from tasktoolkit import context
from tasktoolkit._checks import check_queue, whole_number
from tasktoolkit.errors import (
    InvalidQueueError,
    InvalidTransitionError,
    TaskCancelRequested,
    TaskFailure,
    TaskNotFoundError,
    TaskNotHeldError,
    WorkerStopping,
    database_unavailable,
)
from tasktoolkit.hooks import JobInfo, Outage, decode_trace_context, first_line, hooks_of
from tasktoolkit.orm._clock import db_now
from tasktoolkit.orm._engine import supports_skip_locked
from tasktoolkit.orm._listening import Polling, Subscription, Waiter, waiter_for
from tasktoolkit.orm._operations import pending_key
from tasktoolkit.orm._ready import ready
from tasktoolkit.orm._records import Task
from tasktoolkit.orm._records import operations_table as _O
from tasktoolkit.orm._records import tasks_table as _T
from tasktoolkit.orm._registry import Announcement, beat, leave
from tasktoolkit.orm._retry import in_transaction, is_retryable, short_sessions
from tasktoolkit.orm._states import TaskState
from tasktoolkit.orm._transitions import (
    HANDED_BACK,
    acknowledge_cancel,
    check_host,
    fail_task,
    hand_back,
    known_task,
    not_held,
    note_refused,
    report_progress,
    start_oldest,
    start_ready,
    succeed_task,
    transition,
)
from tasktoolkit.settings import Settings, settings_or_default

__all__ = [
    "WORKER_ERROR",
    "WORKER_ERROR_MESSAGE",
    "Job",
    "Worker",
    "cancel_requested",
    "claim_task",
    "claim_tasks",
    "claimable",
    "heartbeat",
]

_R = TypeVar("_R")
_log = logging.getLogger("tasktoolkit.worker")
#: Candidates read at once by the compare-and-set claim (SQLite).
_CANDIDATES = 16
_MAX_ROUNDS = 50
#: The most tasks one claim starts.
_MOST = 1000
#: The longest a worker waiting to be woken goes without looking for a task.
_RECHECK = 10.0
#: Seconds between two looks for a task while the database is unavailable.
_RECLAIM = 1.0
#: The error code of a task whose worker code raised an unexpected exception.
WORKER_ERROR = "worker_error"
#: What anyone but an admin is shown of a ``worker_error``: the exception's own text
#: (a driver's can name hosts and ports) is for admins, like its traceback.
WORKER_ERROR_MESSAGE = "the task's worker raised an unexpected error"
#: The first and the longest pause between two tries to record an outcome.
_RECORD_PAUSE = (0.1, 2.0)
#: The index a claim seeks, once per queue.
_BY_QUEUE = "ix_tasktoolkit_tasks_queue"
#: The global request id of a task's operation, read with the claim.
_GLOBAL_ID = select(_O.c.global_request_id).where(_O.c.id == _T.c.request_id).scalar_subquery()


def _check_names(names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    checked = list(dict.fromkeys(names))
    if not checked or not all(isinstance(n, str) and n for n in checked):
        raise ValueError(f"claim needs one or more task names, got {checked!r}")
    return checked


def _check_queues(queues: Iterable[str | None]) -> tuple[str | None, ...]:
    if isinstance(queues, str):
        queues = [queues]
    checked = tuple(dict.fromkeys(check_queue(q) for q in queues))
    if not checked:
        raise InvalidQueueError("claim needs one or more queues (None: the default queue)")
    return checked


def _in_queue(queue: str | None) -> ColumnElement[bool]:
    """Routed to ``queue`` (``None``: the default queue)."""
    return _T.c.queue.is_(None) if queue is None else _T.c.queue == queue


def claimable(
    names: Iterable[str],
    queues: Iterable[str | None] = (None,),
    *,
    limit: int,
    backend: str,
    skip_locked: bool = False,
    also: tuple[ColumnElement[Any], ...] = (),
) -> Select[Any]:
    """The ``limit`` oldest pending tasks named one of ``names`` on one of ``queues`` that
    are ready to run now (:func:`~tasktoolkit.orm._ready.ready`): their ids, then ``also``
    (columns of the task's row), oldest first.

    Each queue is one seek of ``ix_tasktoolkit_tasks_queue`` (state, queue,
    created_at, id) reading its own ``limit`` oldest, locked with ``SKIP LOCKED``
    when asked (so each seek passes over the rows other claims hold); several
    queues' are merged oldest first (``UNION ALL``, then ``ORDER BY`` and
    ``LIMIT``). A claim's cost so does not grow with the backlog of the queues
    it does not serve (``tests/orm/test_query_plans.py`` shows each plan). With
    ``skip_locked`` a claim over ``k`` queues locks up to ``k * limit`` rows
    until its commit, and starts ``limit`` of them.

    :param backend: the database's dialect name: PostgreSQL locks each queue's
        rows in a materialized CTE of its own (it allows no ``FOR UPDATE`` in a
        ``UNION``), and reads the default queue in the index's order only when
        the order names ``queue`` first (``queue IS NULL`` is no equality to
        its planner); SQLite takes no ``LIMIT`` in a ``UNION``'s member but in
        a subquery.
    """
    checked_names = _check_names(names)
    checked_queues = _check_queues(queues)
    postgresql = backend == "postgresql"
    order = (_T.c.queue, _T.c.created_at, _T.c.id) if postgresql else (_T.c.created_at, _T.c.id)
    merging = len(checked_queues) > 1
    seeks = []
    for queue in checked_queues:
        seek = (
            select(_T.c.id, *([_T.c.created_at] if merging else []), *also)
            .where(ready(), _in_queue(queue), _T.c.name.in_(checked_names))
            .order_by(*order)
            .limit(limit)
        )
        for mysql in ("mysql", "mariadb"):
            # MariaDB's ORDER BY ... LIMIT heuristics may walk the pending tasks of every
            # queue in ix_tasktoolkit_tasks_state, depending on its sampled statistics.
            seek = seek.with_hint(_T, f"FORCE INDEX ({_BY_QUEUE})", dialect_name=mysql)
        seeks.append(seek.with_for_update(skip_locked=True) if skip_locked else seek)
    if not merging:
        return seeks[0]
    if postgresql:
        members = [
            select(*seek.cte(f"tt_queue_{n}").prefix_with("MATERIALIZED").c)
            for n, seek in enumerate(seeks)
        ]
    elif backend == "sqlite":
        members = [select(*seek.subquery(f"tt_queue_{n}").c) for n, seek in enumerate(seeks)]
    else:
        members = seeks
    merged = union_all(*members).subquery("tt_ready")
    return (
        select(merged.c.id, *(merged.c[c.name] for c in also))
        .order_by(merged.c.created_at, merged.c.id)
        .limit(limit)
    )


@functools.lru_cache(maxsize=256)
def _claim_query(
    names: tuple[str, ...],
    queues: tuple[str | None, ...],
    backend: str,
    *,
    limit: int,
    skip_locked: bool,
    global_id: bool,
) -> Select[Any]:
    """:func:`claimable`, built once per worker's claim (it holds no value of the moment:
    its times are the database's, computed as it runs)."""
    also = (_GLOBAL_ID.label("global_request_id"),) if global_id else ()
    return claimable(
        names, queues, limit=limit, backend=backend, skip_locked=skip_locked, also=also
    )


def claim_task(
    session: Session,
    names: Iterable[str],
    *,
    host: str,
    queues: Iterable[str | None] = (None,),
) -> Task | None:
    """Start the oldest pending task named one of ``names`` that is ready, held by ``host``.

    Call it at the start of a transaction and commit soon after: on
    PostgreSQL and MariaDB the claimed row stays locked until then.

    :param queues: the queues to claim from; ``None`` is the default queue (the
        tasks spawned without one).
    :returns: the started task, or ``None`` when no pending task is left.
    """
    claimed = claim_tasks(session, names, host=host, queues=queues, count=1)
    return claimed[0][0] if claimed else None


def claim_tasks(
    session: Session,
    names: Iterable[str],
    *,
    host: str,
    queues: Iterable[str | None] = (None,),
    count: int,
) -> list[tuple[Task, str | None]]:
    """Start the ``count`` oldest ready tasks named one of ``names`` (fewer if fewer are
    ready), held by ``host``, oldest first, each with the global request id of its
    operation; as :func:`claim_task`.

    On PostgreSQL one statement starts them all (``UPDATE ... FROM`` a
    materialized ``SELECT ... FOR UPDATE SKIP LOCKED LIMIT n ... RETURNING``);
    elsewhere one by one.
    """
    host = check_host(host)
    whole_number(count, "count", maximum=_MOST)
    dialect = session.get_bind().dialect
    skip_locked = supports_skip_locked(session)
    key = (tuple(_check_names(names)), _check_queues(queues), dialect.name)
    if skip_locked and dialect.update_returning:
        oldest = _claim_query(*key, limit=count, skip_locked=True, global_id=False)
        return start_oldest(session, oldest, host=host, also=_GLOBAL_ID)
    limit = 1 if skip_locked else _CANDIDATES
    batch = _claim_query(*key, limit=limit, skip_locked=skip_locked, global_id=True)
    started: list[tuple[Task, str | None]] = []
    for _ in range(_MAX_ROUNDS):
        candidates = session.execute(batch).all()
        if not candidates:
            break
        for task_id, global_id in candidates:
            try:
                task = transition(
                    session, task_id, TaskState.RUNNING, expected=TaskState.PENDING, host=host
                )
            except (InvalidTransitionError, TaskNotFoundError):
                continue  # another worker took it (or its resource went): try the next
            started.append((task, global_id))
            if len(started) == count or skip_locked:
                break
        if len(started) == count:
            break
    return started


def _global_id(session: Session, task: Task) -> str | None:
    if task.request_id is None:
        return None
    found: str | None = session.execute(
        select(_O.c.global_request_id).where(_O.c.id == task.request_id)
    ).scalar()
    return found


def heartbeat(session: Session, task_id: str, *, host: str) -> bool:
    """Record that ``host`` still works on the task, at the database's time.

    A heartbeat is not a change API consumers see, so ``updated_at`` stays.

    :returns: whether cancellation of the task was asked.
    :raises TaskNotHeldError: the task is not running on ``host`` (nothing written).
    """
    host = check_host(host)
    held = [_T.c.id == task_id, _T.c.state == TaskState.RUNNING.value, _T.c.host == host]
    result = cast(
        CursorResult[Any],
        session.execute(
            update(_T).where(*held).values(heartbeat_at=db_now()),
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
    """A worker process's handle on the database: it claims tasks and starts them, each
    call one short transaction, and hands out a :class:`Job` for each task it holds.

    :param bind: an engine, or a ``sessionmaker`` of the host app.
    :param names: the task names this worker does (for :meth:`claim`).
    :param queues: the queues it claims from (a Neutron-style agent's host);
        ``None`` in them is the default queue, of the tasks spawned without
        one. Default: the default queue only.
    :param host: the worker's identity; ``<hostname>:<pid>`` by default. Give
        each thread of a process its own if several claim tasks.
    :param settings: its knobs (default :class:`~tasktoolkit.Settings()`): the
        ``deadline`` of each of its own transactions (one whose database does
        not answer in time is given up and run once more on a fresh connection,
        then raises SQLAlchemy's ``OperationalError``), and ``retryable``, more
        errors on which a call's transaction is run again (see
        :func:`tasktoolkit.orm._retry.is_retryable`), and ``worker_beat_timeout``:
        after its last beat the worker is not live any more
        (:mod:`tasktoolkit.orm._registry`). A worker with task names announces
        itself with its first call and beats with the calls it makes anyway (its
        claims, its jobs' heartbeats and progress), in their transactions, at
        most every third of this; :meth:`close` takes it off the list. So call
        :meth:`claim` (a ``wait`` looks every 10 s at most) or heartbeat a job
        more often than this.
    """

    def __init__(
        self,
        bind: Engine | sessionmaker[Session],
        names: Iterable[str] = (),
        *,
        queues: Iterable[str | None] = (None,),
        host: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        if isinstance(bind, Engine):
            self._sessions: sessionmaker[Session] = short_sessions(bind)
            self._engine: Engine | None = bind
        elif isinstance(bind, sessionmaker):
            self._sessions = bind
            found = bind.kw.get("bind")
            self._engine = found if isinstance(found, Engine) else None
        else:
            raise TypeError(f"Worker needs an Engine or a sessionmaker, got {bind!r}")
        self.names: tuple[str, ...] = tuple(names) if not isinstance(names, str) else (names,)
        self.queues = _check_queues(queues)
        self._lock = threading.Lock()
        self._waiting: Waiter | None = None
        self.host = check_host(self.default_host() if host is None else host)
        #: The knobs it reads: ``deadline``, ``retryable``, ``worker_beat_timeout``.
        self.settings: Settings = settings_or_default(settings)
        self._stopping = threading.Event()
        self._hand_back_at: float | None = None
        #: The database as this worker's claims, reports and outcomes see it.
        self._outage = Outage(_log, f"worker {self.host}")
        #: Seconds after its last beat at which it is not live (``worker_beat_timeout``).
        self.beat_timeout = self.settings.worker_beat_timeout.total_seconds()
        #: What it says of itself as it beats; ``None``: it runs no names (a bridge's).
        self._announcement = (
            Announcement(
                self.host, "database", self.names, self.queues, math.ceil(self.beat_timeout)
            )
            if self.names
            else None
        )
        #: When (monotonic) it last beat; ``None``: not yet.
        self._beaten: float | None = None

    @staticmethod
    def default_host() -> str:
        """``<hostname>:<pid>``: a worker identity unique per process."""
        return f"{socket.gethostname()}:{os.getpid()}"

    # -- stopping --------------------------------------------------------

    def stop(self, grace: float = 30.0) -> None:
        """Claim no more; jobs still running after ``grace`` seconds are handed back.

        A job learns it must go at its next :meth:`Job.check_cancelled`, which
        then raises :class:`~tasktoolkit.errors.WorkerStopping`; its ``with``
        block hands the task back as ``pending`` at once (not a failed
        attempt). Safe to call from a signal handler or another thread.
        """
        if grace < 0:
            raise ValueError(f"grace must be >= 0 seconds, got {grace!r}")
        self._hand_back_at = time.monotonic() + grace
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping.is_set()

    @property
    def must_hand_back(self) -> bool:
        """Whether the grace period of :meth:`stop` is over."""
        at = self._hand_back_at
        return at is not None and time.monotonic() >= at

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking when the grace period of :meth:`stop` ends."""
        end = time.monotonic() + seconds
        if not self._stopping.wait(seconds):
            return
        at = self._hand_back_at
        left = min(end, at if at is not None else end) - time.monotonic()
        if left > 0:
            time.sleep(left)

    # -- transactions ----------------------------------------------------

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
        s = self.settings
        announcement = self._announcement
        now = time.monotonic()
        due = announcement is not None and (
            self._beaten is None or now - self._beaten >= self.beat_timeout / 3
        )
        if not due or announcement is None:
            return in_transaction(
                self._sessions, work, seconds=s.deadline_seconds, predicate=s.retryable
            )

        def beating(session: Session) -> _R:
            beat(session.connection(), announcement)
            return work(session)

        result = in_transaction(
            self._sessions, beating, seconds=s.deadline_seconds, predicate=s.retryable
        )
        self._beaten = now
        return result

    def _run_until(
        self, work: Callable[[Session], _R], session: Session | None, held_until: float
    ) -> _R:
        """:meth:`_run`, tried again with backoff while the database is away, until
        ``held_until`` (monotonic): after it, the reaper may have taken the task."""
        pause, longest = _RECORD_PAUSE
        while True:
            try:
                result = self._run(work, session)
            except Exception as exc:
                if session is not None or not database_unavailable(exc):
                    raise
                if time.monotonic() + pause > held_until:
                    raise
                self._outage.failed(
                    exc, f"outcomes are tried again every {longest:.0f} s at most while held"
                )
                time.sleep(pause)
                pause = min(pause * 2, longest)
                continue
            self._outage.over()
            return result

    # -- claims --------------------------------------------------------------

    def claim(self, names: Iterable[str] | None = None, *, wait: float = 0.0) -> Job | None:
        """Start the oldest ready task among ``names`` (default: the worker's).

        :param wait: seconds to wait for a task when none is ready, holding no
            transaction and no connection meanwhile: on PostgreSQL the worker
            sleeps until a task is made pending on one of its queues (a
            ``NOTIFY`` sent in the spawning transaction, heard by the process's
            one ``LISTEN`` connection), looking again every 10 s at most (a
            retry whose backoff ends sends none); elsewhere it polls, 50 ms
            after the first look, then twice as long each time, up to 1 s.
            While the database is unavailable it looks again every second
            (one log line when it goes, one when it is back). :meth:`stop`
            ends the wait.
        :returns: the claimed :class:`Job`, or ``None`` when nothing is ready
            (within ``wait``), or the worker is stopping.
        :raises sqlalchemy.exc.OperationalError: without ``wait``, the database
            is unavailable.
        """
        jobs = self.claim_many(1, names, wait=wait)
        return jobs[0] if jobs else None

    def claim_many(
        self, count: int, names: Iterable[str] | None = None, *, wait: float = 0.0
    ) -> list[Job]:
        """Start up to ``count`` of the oldest ready tasks among ``names``, in one
        transaction (one statement on PostgreSQL); oldest first. ``wait`` as for
        :meth:`claim`, until at least one is claimed.

        Every job is held (``running``) from now on: claim no more than this
        worker finishes within their heartbeat timeout, or heartbeat them all.
        """
        wanted = self.names if names is None else names

        def claim(session: Session) -> list[Job]:
            claimed = claim_tasks(session, wanted, host=self.host, queues=self.queues, count=count)
            return [Job._of(self, task, global_id) for task, global_id in claimed]

        if self.stopping:
            return []
        if wait <= 0:
            return self._claim(claim)
        until = time.monotonic() + wait
        # Subscribed before the first look: a task spawned between a look
        # that found nothing and the sleep still wakes the sleep.
        with self._waiter().subscribe(*(pending_key(q) for q in self.queues)) as pending:
            while not self._stopping.is_set():
                try:
                    jobs = self._claim(claim)
                except Exception as exc:
                    if not database_unavailable(exc):
                        raise
                    jobs = None  # said once: look again shortly
                left = until - time.monotonic()
                if jobs or left <= 0:
                    return jobs or []
                if jobs is None:
                    self._stopping.wait(min(left, _RECLAIM))
                elif not self._sleep(pending, min(left, _RECHECK)) and time.monotonic() >= until:
                    return []  # nothing heard of until the end: no last look
        return []

    def _claim(self, claim: Callable[[Session], list[Job]]) -> list[Job]:
        """One look for tasks; an outage is said once, and so is its end."""
        try:
            jobs = self._run(claim)
        except Exception as exc:
            if database_unavailable(exc):
                self._outage.failed(exc, f"claims look again every {_RECLAIM:.0f} s")
            raise
        self._outage.over()
        return jobs

    def _sleep(self, pending: Subscription, seconds: float) -> bool:
        """Wait on ``pending`` up to ``seconds``, a second at a time so that :meth:`stop`
        ends the wait soon; whether a change was heard of."""
        end = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            if pending.wait(min(left, 1.0)):
                return True
            if not pending.pushed:
                return False  # a polling pause is over: look again
        return False

    def _waiter(self) -> Waiter:
        with self._lock:
            if self._waiting is None:
                self._waiting = waiter_for(self._engine) if self._engine else Polling()
            return self._waiting

    def close(self) -> None:
        """Leave the list of live workers, and let go of what :meth:`claim` waits with
        (the process's ``LISTEN`` connection is closed with its last user)."""
        with self._lock:
            waiting, self._waiting = self._waiting, None
            beaten, self._beaten = self._beaten, None
        if waiting is not None:
            waiting.close()
        if beaten is not None:
            try:
                in_transaction(
                    self._sessions,
                    lambda s: leave(s.connection(), self.host),
                    seconds=self.settings.deadline_seconds,
                    predicate=self.settings.retryable,
                )
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                _log.warning("worker %s: not taken off the list of workers: %s", self.host, exc)

    def start(self, task_id: str) -> Job:
        """Start one given pending task (``pending`` -> ``running``) for this worker (a
        queue bridge's delivery names it).

        :raises InvalidTransitionError: the task is not pending, or not ready: it waits
            on a task it runs after, or another task of its exclusive name runs on its
            resource (it is published again once it is ready).
        """

        def start(session: Session) -> Job:
            task = start_ready(session, task_id, host=self.host)
            return Job._of(self, task, _global_id(session, task))

        return self._run(start)


@dataclass
class Job:
    """A task a :class:`Worker` holds, and the one handle on it: report on it, and
    finish it once.

    Used as a context manager, it binds the task's request context (for
    logs) and records the outcome of the ``with`` block:

    - the block ends normally: ``succeeded`` (unless the block finished the
      job itself);
    - it raises :class:`TaskCancelRequested` (see :meth:`check_cancelled`):
      ``cancelled``; the exception is swallowed;
    - it raises :class:`TaskFailure`: ``failed`` with the failure's code and
      message, or back to ``pending`` for another attempt when the failure is
      ``retryable`` and attempts are left; swallowed;
    - it raises :class:`~tasktoolkit.errors.WorkerStopping` (the worker's
      grace period is over), ``KeyboardInterrupt`` or ``SystemExit``: the task
      is handed back as ``pending`` (not a failed attempt); ``WorkerStopping``
      is swallowed, the others propagate;
    - it raises a transient error of the database (unavailable, a deadlock, a
      serialization failure: the job's own reads and writes met an outage or
      a race): a retryable failure with code ``worker_error``, back to
      ``pending`` while attempts are left; swallowed, with one log line;
    - it raises any other ``Exception``: ``failed`` with code ``worker_error``,
      the exception's message and its traceback (both for admins); re-raised.

    A heartbeat or progress report that fails because the database is away
    is skipped (one log line while it is away, one when it is back); the
    outcome is tried again, with backoff, for as long as the task is still
    held (its heartbeat timeout since the last contact). When the task is no
    longer held (the reaper took it while the database was away from this
    worker), the outcome is refused: that is said in one log line and on the
    attempt the reaper ended, and the ``with`` block raises nothing for it.
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
    #: The global request id of the task's operation, if it has one.
    global_request_id: str | None = None
    #: The task's project and user (its operation's caller), if it has them.
    project_id: str | None = None
    user_id: str | None = None
    #: Whether the job was finished (through this object).
    finished: bool = False
    #: Why its outcome was refused (the task was taken from this worker), if it was.
    refused: str | None = None
    _contact: float = field(default_factory=time.monotonic, repr=False)
    _token: Any = field(default=None, repr=False)
    #: The task as claimed: the move ending the job starts from it (``known_task``).
    _task: Task | None = field(default=None, repr=False)
    #: The hooks' context around the ``with`` block, while it runs.
    _around: AbstractContextManager[object] | None = field(default=None, repr=False)

    @classmethod
    def _of(cls, worker: Worker, task: Task, global_request_id: str | None = None) -> Job:
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
            global_request_id,
            task.project_id,
            task.user_id,
            _task=task,
        )

    @property
    def context(self) -> context.RequestContext | None:
        """The request context the ``with`` block binds (``None`` for a task of no request).

        A task spawned inside the block belongs to the job's operation (the
        operation stays running until it ends too), with the operation's
        project (where its resource has none) and user; a job of a task of no
        request spawns tasks of no operation.
        """
        if self.request_id is None:
            return None
        return context.RequestContext(
            request_id=self.request_id,
            global_request_id=self.global_request_id,
            project_id=self.project_id,
            user_id=self.user_id,
            operation_id=self.request_id,
        )

    # -- reports ------------------------------------------------------------

    def _report(self, work: Callable[[Session], _R], default: _R) -> _R:
        """A heartbeat or progress report; skipped (``default``) while the database is away."""
        try:
            result = self.worker._run(work)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            self.worker._outage.failed(exc, "reports are skipped until it is back")
            return default
        self.worker._outage.over()
        self._contact = time.monotonic()
        return result

    def heartbeat(self) -> bool:
        """Record a heartbeat (at the database's time); returns whether cancellation was asked.

        :raises TaskNotHeldError: the task is not running on this worker any more.
        """
        host = self.worker.host
        return self._report(lambda s: heartbeat(s, self.id, host=host), False)

    def progress(self, progress: int | None, message: str | None = None) -> None:
        """Record progress (0..100) and a message; counts as a heartbeat."""
        host = self.worker.host
        self._report(
            lambda s: report_progress(s, self.id, progress, host=host, message=message), None
        )

    def cancel_requested(self) -> bool:
        """Whether cancellation was asked (one read, no heartbeat)."""
        return self.worker._run(lambda s: cancel_requested(s, self.id))

    def check_cancelled(self) -> None:
        """Record a heartbeat; raise :class:`TaskCancelRequested` if asked to stop, or
        :class:`~tasktoolkit.errors.WorkerStopping` once the worker's grace period is over."""
        if self.worker.must_hand_back:
            raise WorkerStopping(f"worker {self.worker.host} is stopping: task {self.id} goes back")
        if self.heartbeat():
            raise TaskCancelRequested(f"cancellation of task {self.id} was asked")

    # -- the outcome ----------------------------------------------------------

    def _finish(
        self,
        outcome: str,
        work: Callable[[Session], object],
        session: Session | None,
        *,
        wait: bool = True,
    ) -> None:
        """``work``, the move ending the job as ``outcome``, from the task as claimed: no
        read first."""
        held_until = self._contact + self.heartbeat_timeout if wait else 0.0
        snapshot = self._task

        def finish(s: Session) -> object:
            if snapshot is None:
                return work(s)
            with known_task(s, snapshot):
                return work(s)

        try:
            self.worker._run_until(finish, session, held_until)
        except TaskNotHeldError as refused:
            self._refuse(outcome, refused)
            raise
        self.finished = True

    def _refuse(self, outcome: str, refused: TaskNotHeldError) -> None:
        """Say once, in a log line and on the attempt it ended, that the task was taken from
        this worker before its outcome could be recorded."""
        if self.refused is not None:
            return  # said already
        self.refused = str(refused)
        _log.warning(
            "task %s: outcome %s not recorded, the task was taken from this worker: %s",
            self.id,
            outcome,
            refused,
        )
        host, number = self.worker.host, self.attempts
        try:
            self.worker._run(
                lambda s: note_refused(s, self.id, attempt=number, host=host, outcome=outcome)
            )
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            _log.warning("task %s: the refusal not noted on its attempt: %s", self.id, exc)

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
        :param session: do it in this session's transaction, with the host's own
            changes (it then commits or rolls back with them), not in one of its own.
        :raises TaskNotHeldError: the task was taken from this worker (said in a log
            line and on its attempt; a ``with`` block swallows it).

        Example (the success and the host's own change commit together)::

            with worker.transaction() as session:
                job.succeed("unbound", result={"mac": mac}, session=session)
                session.execute(delete(Port).where(Port.id == job.resource_id))
        """
        host = self.worker.host

        def succeed(s: Session) -> object:
            return succeed_task(s, self.id, host=host, message=message, result=result)

        self._finish(TaskState.SUCCEEDED.value, succeed, session)

    def fail(
        self,
        code: str,
        message: str,
        traceback: str | None = None,
        *,
        retry: bool = False,
        session: Session | None = None,
    ) -> None:
        """Finish as ``failed`` with an error code (1 to 64 characters) and message, or,
        with ``retry`` and attempts left, go back to ``pending`` after the backoff;
        ``session`` as for :meth:`succeed`."""
        host = self.worker.host

        def fail(s: Session) -> object:
            return fail_task(
                s, self.id, host=host, code=code, message=message, traceback=traceback, retry=retry
            )

        self._finish(f"failed ({code})", fail, session)

    def acknowledge_cancel(
        self, message: str | None = None, *, session: Session | None = None
    ) -> None:
        """Finish as ``cancelled`` (stopped as asked); ``session`` as for :meth:`succeed`."""
        host = self.worker.host
        self._finish(
            TaskState.CANCELLED.value,
            lambda s: acknowledge_cancel(s, self.id, host=host, message=message),
            session,
        )

    def hand_back(self) -> None:
        """Give the task back as ``pending`` at once: this worker stops before finishing it.

        Tried once: a worker on its way out does not wait for the database
        (the reaper re-queues the task after its heartbeat timeout instead).
        """
        host = self.worker.host
        self._finish(HANDED_BACK, lambda s: hand_back(s, self.id, host=host), None, wait=False)

    def __enter__(self) -> Job:
        ctx = self.context
        if ctx is not None:
            self._token = context.bind(ctx)
        engine = self.worker._engine
        if engine is not None and (hooks := hooks_of(engine)):
            # The hooks' (a span, a timer) hold the whole attempt, its outcome recorded.
            self._around = hooks.around_job(self._info())
            self._around.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            return self._record(exc)
        finally:
            around, self._around = self._around, None
            if around is not None:
                around.__exit__(exc_type, exc, tb)
            if self._token is not None:
                context.reset(self._token)
                self._token = None

    def _info(self) -> JobInfo:
        task = self._task
        return JobInfo(
            self.id,
            self.name,
            self.resource_type,
            self.resource_id,
            self.request_id,
            self.attempts,
            queue=None if task is None else task.queue,
            trace_context=None if task is None else decode_trace_context(task.trace_context),
        )

    def _record(self, exc: BaseException | None) -> bool:
        """Record the outcome of the ``with`` block; whether to swallow ``exc``."""
        if self.finished:
            return False
        if self.refused is not None:  # said already: nothing more to record
            return isinstance(exc, TaskNotHeldError)
        swallow = False
        try:
            if exc is None:
                self.succeed()
                return False
            if isinstance(exc, WorkerStopping | KeyboardInterrupt | SystemExit):
                return self._leave(exc)
            if not isinstance(exc, Exception):
                return False  # some other way out of the process: left to the reaper
            swallow = True
            if isinstance(exc, TaskCancelRequested):
                self.acknowledge_cancel("cancelled as requested")
            elif isinstance(exc, TaskFailure):
                self.fail(exc.error_code, exc.message, _format(exc), retry=exc.retryable)
            elif database_unavailable(exc) or is_retryable(exc, self.worker.settings.retryable):
                _log.warning(
                    "task %s: attempt %d of %d met a transient database error (%s)",
                    self.id,
                    self.attempts,
                    self.max_attempts,
                    first_line(exc),
                )
                self.fail(WORKER_ERROR, str(exc) or type(exc).__name__, _format(exc), retry=True)
            else:
                swallow = False
                self.fail(WORKER_ERROR, str(exc) or type(exc).__name__, _format(exc))
        except TaskNotHeldError as lost:  # said once (a log line, the attempt)
            if exc is not None and not swallow:
                exc.add_note(f"tasktoolkit: outcome not recorded: {lost}")
        except Exception as error:
            if not database_unavailable(error):
                raise
            _log.warning(
                "task %s: outcome not recorded, the database is unavailable past the task's "
                "heartbeat timeout (%s): the reaper takes it",
                self.id,
                first_line(error),
            )
        return swallow

    def _leave(self, exc: BaseException) -> bool:
        """Hand the task back as the worker leaves; swallow only ``WorkerStopping``."""
        try:
            self.hand_back()
        except TaskNotHeldError:
            pass  # said once (a log line, the attempt)
        except Exception as error:
            if not database_unavailable(error):
                raise
            _log.warning(
                "task %s not handed back (database unavailable): left to the reaper", self.id
            )
        return isinstance(exc, WorkerStopping)


def _format(exc: BaseException) -> str:
    return "".join(traceback_module.format_exception(exc))
