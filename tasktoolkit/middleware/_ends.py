"""The end writer: the ends of a process's requests, written off their threads in rounds.

A request that spawned tasks has its operation written by its spawn; what is
left when its body is closed (its status, the route's action, its target, and
the finish when no task is active) is handed to the process's :class:`EndWriter`
and the request's thread goes on. The writer's thread takes every end waiting,
writes them in one statement and one commit (non-durable on PostgreSQL unless
``durable``: ``synchronous_commit = off`` for that transaction), then tells the
signals and hooks of the operations it finished, and takes the ends that came
meanwhile: the busier the process, the larger the round, never a wait for one.

Until its end lands an operation reads ``running`` (its tasks may run already).

- **Started lazily**, with the first end, and again in a child after a fork:
  the child's ends are its own; the parent's, copied into the child, stay
  the parent's to write, so no end is written twice.
- **Flushed when the process exits**: at ``atexit`` (gunicorn's workers and
  ``sys.exit`` run it), on ``SIGTERM`` when nothing else handles it (the
  handler flushes, then dies of the signal as it would have), and by
  :func:`flush_ends`, the one line a server's own worker-exit hook needs::

      # gunicorn.conf.py (its workers run atexit too; this is the explicit form)
      worker_exit = lambda server, worker: tasktoolkit.middleware.flush_ends()
      # uWSGI, in the module that makes the app (uWSGI's workers skip atexit)
      uwsgi.atexit = tasktoolkit.middleware.flush_ends

- **A crash** (``kill -9``, a power cut) loses what was held: those operations
  never record their end, and the reaper ends them once their request timeout
  has passed (``request_lost`` when they have no task), as for a request that
  died mid-way.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.pool import SingletonThreadPool

from tasktoolkit import signals
from tasktoolkit._request_protocol import RequestEnd, announce
from tasktoolkit.hooks import Hooks
from tasktoolkit.orm._operations import end_requests
from tasktoolkit.orm._retry import retrying

__all__ = ["EndWriter", "flush_ends"]

_log = logging.getLogger("tasktoolkit.middleware")
#: How many of the last ends' lags (close to commit, seconds) a writer keeps.
_LAGS = 10_000
#: How long a round waits, from its first end, for more (seconds).
_LINGER = 0.010
#: The most ends one round writes.
_ROUND = 500
#: How long a flush at exit waits for the ends it holds.
_EXIT_FLUSH_SECONDS = 10.0
#: Every writer of the process that may hold ends (until closed): flushed at exit.
_WRITERS: set[EndWriter] = set()


class EndWriter:
    """Writes the ends of this process's requests on one thread of its own, in rounds.

    :param engine: the database (the app's engine: its pool).
    :param durable: wait for each round's commit to reach the disk (PostgreSQL).
    :param deadline: seconds each round may take (a round that cannot be
        written is logged, and its operations left to the reaper).
    :param hooks: told of the operations a round finished, and of an outage.
    """

    def __init__(
        self, engine: Engine, *, durable: bool, deadline: float | None, hooks: Hooks
    ) -> None:
        self.engine = engine
        self.durable = durable
        self.deadline = deadline
        self.hooks = hooks
        #: The last ends' lags, from the request's close to the commit, in seconds.
        self.lags: deque[float] = deque(maxlen=_LAGS)
        self._non_durable = not durable and engine.dialect.name == "postgresql"
        # A pool of one connection per thread (SQLite ":memory:") would show another
        # thread another database: there, each end is written by the thread closing it.
        self._inline = isinstance(engine.pool, SingletonThreadPool)
        self._reset()
        _WRITERS.add(self)
        _install_exit_flush()

    def _reset(self) -> None:
        """A fresh state: no end held, no thread (at start, and in a child after a fork)."""
        self._pid = os.getpid()
        self._condition = threading.Condition(threading.Lock())
        self._waiting: list[tuple[RequestEnd, float]] = []
        self._writing = 0
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._flushing = 0

    def submit(self, end: RequestEnd) -> None:
        """Hand over ``end``; it is written within the next round. Never blocks on the database."""
        if self._inline:
            self._write([(end, time.monotonic())])
            return
        if self._pid != os.getpid():
            self._reset()  # a child the fork hook did not reach (a fork without os.fork)
        with self._condition:
            self._waiting.append((end, time.monotonic()))
            _WRITERS.add(self)
            if self._thread is None and not self._stopped:
                self._start()
            if len(self._waiting) == 1 or len(self._waiting) >= _ROUND:
                self._condition.notify()

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name="tasktoolkit-end-writer", daemon=True)
        self._thread = thread
        thread.start()

    def _run(self) -> None:
        condition = self._condition
        while True:
            with condition:
                while not self._waiting and not self._stopped:
                    condition.wait()
                if not self._waiting:
                    return
                # Linger a moment for the ends of the requests in flight: one round
                # for several of them costs less than one each, and the lag stays
                # well within its bar. A flush or a stop cuts it short.
                until = self._waiting[0][1] + _LINGER
                while (
                    len(self._waiting) < _ROUND
                    and not self._flushing
                    and not self._stopped
                    and (left := until - time.monotonic()) > 0
                ):
                    condition.wait(left)
                batch, self._waiting = self._waiting, []
                self._writing = len(batch)
            try:
                self._write(batch)
            finally:
                with condition:
                    self._writing = 0
                    condition.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every end handed over before is written (or given up on).

        Ends held while the writer's thread is not running (at exit, once
        stopped) are written on the calling thread.

        :returns: whether everything was written within ``timeout`` seconds.
        """
        if self._pid != os.getpid():
            return True  # the parent's ends, not this process's
        until = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            self._flushing += 1
            self._condition.notify_all()
            try:
                return self._flush_until(until)
            finally:
                self._flushing -= 1

    def _flush_until(self, until: float | None) -> bool:
        """:meth:`flush`, with the condition held."""
        while self._waiting or self._writing:
            thread = self._thread
            if thread is None or not thread.is_alive():
                batch, self._waiting = self._waiting, []
                self._condition.release()
                try:
                    self._write(batch)
                finally:
                    self._condition.acquire()
                continue
            left = None if until is None else until - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._condition.wait(left)
        return True

    def close(self, timeout: float | None = _EXIT_FLUSH_SECONDS) -> bool:
        """Write what is held, then stop the thread (a later end starts it again)."""
        _WRITERS.discard(self)
        flushed = self.flush(timeout)
        with self._condition:
            self._stopped = True
            thread, self._thread = self._thread, None
            self._condition.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._condition:
            self._stopped = False
        return flushed

    def _write(self, batch: list[tuple[RequestEnd, float]]) -> None:
        """One round: every end of ``batch`` in one statement, one commit; never raises."""
        ends = [end for end, _ in batch]
        read_back = bool(signals.operation_finished.receivers) or bool(self.hooks)
        try:
            finished = retrying(lambda: self._transaction(ends, read_back), seconds=self.deadline)
        except Exception as exc:  # the database's errors, SQLAlchemy's or oslo.db's
            doing = _not_recorded(ends)
            if not self.hooks.unavailable("middleware.end", exc, doing=doing):
                _log.exception("the end writer failed to record %d request end(s)", len(ends))
            return
        self.hooks.available("middleware.end")
        landed = time.monotonic()
        self.lags.extend(landed - handed for _, handed in batch)
        for change in finished:
            announce(self.hooks, change)

    def _transaction(self, ends: list[RequestEnd], read_back: bool) -> list[Any]:
        with self.engine.begin() as connection:
            if self._non_durable:
                connection.exec_driver_sql("SET LOCAL synchronous_commit TO off")
            return end_requests(connection, ends, read_back=read_back)


def _not_recorded(ends: list[RequestEnd]) -> str:
    ids = ", ".join(end.operation_id for end in ends[:3])
    more = f" and {len(ends) - 3} more" if len(ends) > 3 else ""
    count = "1 request" if len(ends) == 1 else f"{len(ends)} requests"
    return f"the end of {count} not recorded ({ids}{more}); the reaper ends them"


def flush_ends(timeout: float | None = _EXIT_FLUSH_SECONDS) -> bool:
    """Write every request end this process holds; for a server's worker-exit hook.

    :returns: whether all were written within ``timeout`` seconds.
    """
    return all([writer.close(timeout) for writer in list(_WRITERS)])


def _after_fork_in_child() -> None:
    for writer in list(_WRITERS):
        writer._reset()


_installed: list[bool] = []


def _install_exit_flush() -> None:
    """Once per process: flush at exit, after a fork start afresh, and on SIGTERM."""
    if _installed:
        return
    _installed.append(True)
    atexit.register(flush_ends)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _flush_then_die)
    except ValueError:
        pass  # not the main thread: only that one may handle signals


def _flush_then_die(signum: int, frame: FrameType | None) -> None:
    """SIGTERM, which nothing else handles: write the held ends, then die of it as before."""
    handler: Callable[..., Any] | int = signal.SIG_DFL
    try:
        flush_ends()
    finally:
        signal.signal(signum, handler)
        os.kill(os.getpid(), signum)
