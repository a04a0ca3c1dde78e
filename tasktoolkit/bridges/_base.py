"""The bridge base: what every queue backend shares, over a few primitives of its own.

A backend subclasses :class:`Bridge` and implements:

- :meth:`Bridge._send`: publish messages (each a task id, on the task's queue,
  maybe after a delay); the ids it sent;
- :meth:`Bridge._stop`: ask the queue's workers to interrupt the handlers of
  running tasks whose cancel was committed (the cancel flag stands anyway);
- :meth:`Bridge._declare`: make the queue's consumer of a task name, whose
  messages it passes to :meth:`Bridge.deliver`;
- optionally :meth:`Bridge._interruptible` and :meth:`Bridge._stopped_by`:
  where a handler may be interrupted by :meth:`Bridge._stop`, and by which
  exception.

The base does the rest, the same for every backend: publish after commit,
mark, sweep, deliver by compare-and-set, heartbeats, a worker per process,
the hooks (deliveries run inside ``around_delivery``; publishes and sweeps
are announced with ``happened``; a database outage follows the hooks' one
policy).
"""

from __future__ import annotations

import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tasktoolkit._checks import check_task_name, whole_number
from tasktoolkit.bridges._delivery import RAN, SKIPPED, UNAVAILABLE, UNKNOWN, Outcome, run
from tasktoolkit.errors import HandlerConflictError, InvalidTransitionError, TaskNotFoundError
from tasktoolkit.hooks import Delivery, Event, first_line
from tasktoolkit.orm import Job, Worker, deadline
from tasktoolkit.orm._events import dispatchers
from tasktoolkit.orm._publishing import (
    Recorded,
    ToPublish,
    backoffs,
    mark_published,
    recorded,
    to_publish,
)
from tasktoolkit.orm._retry import in_transaction, short_sessions
from tasktoolkit.settings import MAX_BATCH_SIZE, Settings
from tasktoolkit.signals import TaskChange

if TYPE_CHECKING:
    from tasktoolkit.toolkit import Toolkit

__all__ = ["Bridge", "Handler", "Message"]

#: A handler runs one started task; it may return the task's result (a JSON object).
Handler = Callable[[Job], "dict[str, Any] | None"]
_H = TypeVar("_H", bound=Handler)
_log = logging.getLogger("tasktoolkit.bridges")


@dataclass(frozen=True, slots=True)
class Message:
    """One message to publish: a pointer to a task.

    :param delay: seconds before it may be delivered (a retry's backoff); ``None``: at once.
    """

    task_id: str
    name: str
    queue: str | None = None
    delay: float | None = None


class Bridge(ABC):
    """Runs the toolkit's tasks on a task queue; a backend subclasses it (see the module).

    :param toolkit: the :class:`~tasktoolkit.Toolkit` of the tasks' database.
        Its settings give ``sweep_after``, ``heartbeat_every``, ``batch_size``,
        ``deadline``, ``retryable`` and the hooks; every session on its engine
        publishes the tasks of this bridge's names once it commits.
    :param names: more task names to publish, whose handlers live in the
        workers only (the API process need not import them).
    :raises HandlerConflictError: a name already runs on another bridge of the engine.
    :raises InvalidTaskNameError: not a task name.
    """

    #: The backend's name: a delivery's ``bridge`` and the ``reason`` of its events.
    kind: ClassVar[str] = "bridge"

    def __init__(self, toolkit: Toolkit, *, names: Iterable[str] = ()) -> None:
        settings = getattr(toolkit, "settings", None)
        engine = getattr(toolkit, "engine", None)
        if not isinstance(settings, Settings) or not isinstance(engine, Engine):
            raise TypeError(f"{type(self).__name__} needs a tasktoolkit.Toolkit, got {toolkit!r}")
        self.toolkit = toolkit
        self.settings: Settings = settings
        self.engine: Engine = engine
        self.hooks = settings.hooks
        self._sessions = short_sessions(engine)
        self._handlers: dict[str, Handler] = {}
        self._workers: dict[int, Worker] = {}
        self._lock = threading.Lock()
        #: Deliveries this process skipped: the task had started or ended (a
        #: duplicate or late message), or did not exist.
        self.skipped = 0
        self._registry = dispatchers(engine)
        checked = [check_task_name(n) for n in ([names] if isinstance(names, str) else names)]
        try:
            for name in checked:
                self._registry.bind(name, self)
        except HandlerConflictError:
            self._registry.release(self)  # all of them or none
            raise

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {', '.join(sorted(self.names)) or 'no task names'}>"

    def close(self) -> None:
        """Stop publishing: its names are bound to no bridge any more."""
        self._registry.release(self)

    # -- the backend's primitives ----------------------------------------------

    @abstractmethod
    def _send(self, messages: Sequence[Message]) -> list[str]:
        """Publish ``messages``; the task ids sent. Raises when the queue cannot be reached."""

    @abstractmethod
    def _stop(self, task_ids: Sequence[str]) -> None:
        """Ask the queue's workers to interrupt the handlers running these (cancelled) tasks."""

    @abstractmethod
    def _declare(self, name: str) -> None:
        """Make the queue's consumer of task ``name``: each message to :meth:`deliver`."""

    def _interruptible(self, job: Job) -> AbstractContextManager[object]:
        """Around ``job``'s handler alone: while it runs, :meth:`_stop` may interrupt it."""
        return nullcontext()

    def _stopped_by(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the queue's interruption of a handler (by :meth:`_stop`)."""
        return False

    # -- binding ---------------------------------------------------------------

    @property
    def names(self) -> frozenset[str]:
        """The task names this bridge publishes: its handlers' and ``names``."""
        return self._registry.names(self)

    def handler(self, name: str) -> Callable[[_H], _H]:
        """Bind the handler of task ``name`` (a decorator).

        :raises HandlerConflictError: ``name`` already has a handler on this
            bridge, or runs on another bridge of the engine.
        :raises InvalidTaskNameError: ``name`` is not a task name.
        """
        check_task_name(name)
        if name in self._handlers:
            raise HandlerConflictError(f"task {name!r} already has a handler on this bridge")

        def bind(handler: _H) -> _H:
            if not callable(handler):
                raise TypeError(f"a handler must be callable, got {handler!r}")
            if name in self._handlers:
                raise HandlerConflictError(f"task {name!r} already has a handler on this bridge")
            self._registry.bind(name, self)
            self._handlers[name] = handler
            self._declare(name)
            return handler

        return bind

    def handler_of(self, name: str) -> Handler:
        """The handler bound to ``name`` (``KeyError`` if none)."""
        return self._handlers[name]

    def worker(self) -> Worker:
        """This process's :class:`~tasktoolkit.orm.Worker` (one per process: queues fork)."""
        pid = os.getpid()
        with self._lock:
            found = self._workers.get(pid)
            if found is None:
                found = self._workers[pid] = self.toolkit.worker(())
            return found

    # -- the dispatcher (after commit) -----------------------------------------

    def publish(self, tasks: Sequence[TaskChange]) -> None:
        """Publish committed pending tasks, then mark them published.

        A re-queued task whose retry waits for its backoff is published with
        the time left as its delay. A queue that cannot be reached is logged,
        never raised: the tasks stay unpublished and :meth:`sweep` publishes
        them later. Announced to the hooks as a ``published`` event.
        """
        requeued = [t.task_id for t in tasks if t.old_state is not None]
        delays: dict[str, float] = {}
        try:
            if requeued:
                delays = self._database(lambda s: backoffs(s.connection(), requeued))
        except Exception as exc:
            if not self.hooks.unavailable(
                "bridge.publish", exc, doing=f"{len(tasks)} task(s) left for the sweeper"
            ):
                raise
            return
        messages = [Message(t.task_id, t.name, t.queue, delays.get(t.task_id)) for t in tasks]
        try:
            sent = self._send(messages)
        except Exception as exc:
            _log.warning(
                "%d task(s) not published, left for the sweeper: %s", len(tasks), first_line(exc)
            )
            return
        try:
            self._database(lambda s: mark_published(s.connection(), sent))
        except Exception as exc:  # published all the same: a sweep sends them once more
            if not self.hooks.unavailable(
                "bridge.publish", exc, doing=f"{len(sent)} published task(s) not marked"
            ):
                raise
        finally:
            self.hooks.happened(Event("published", count=len(sent), reason=self.kind))

    def revoke(self, tasks: Sequence[TaskChange]) -> None:
        """Ask the queue to interrupt these running tasks' handlers (their cancel is
        committed, and the cancel flag stands whatever happens here)."""
        ids = [t.task_id for t in tasks]
        try:
            self._stop(ids)
        except Exception as exc:
            _log.warning("stop of %s not sent (the cancel flag stands): %s", ids, first_line(exc))

    def _database(self, work: Callable[[Session], Any]) -> Any:
        """``work`` in a short transaction of its own, within the settings' deadline."""
        s = self.settings
        return in_transaction(
            self._sessions, work, seconds=s.deadline_seconds, predicate=s.retryable
        )

    # -- the sweeper -----------------------------------------------------------

    def sweep(self, *, batch_size: int | None = None) -> int:
        """Publish this bridge's tasks that wait for it; how many were published.

        Those left unpublished ``sweep_after`` after they could run (the queue
        was down, the process died between its commit and its publish), and
        those published but not started within their ``redeliver_after`` (the
        broker lost the message, or a dead worker holds it). Several sweepers
        can run at once: each row is taken by one (``SKIP LOCKED`` where the
        database has it). Stops at the first batch the queue refuses (logged).
        Each batch is announced to the hooks as a ``swept`` event.

        :param batch_size: tasks per transaction (default: the settings').
        """
        limit = self.settings.batch_size
        if batch_size is not None:
            limit = whole_number(batch_size, "batch_size", maximum=MAX_BATCH_SIZE)
        names, total = self.names, 0
        while True:
            try:
                found, sent = self._database(lambda s: self._sweep_batch(s, names, limit))
            except Exception as exc:
                if not self.hooks.unavailable("bridge.sweep", exc, doing="nothing swept"):
                    raise
                return total
            self.hooks.available("bridge.sweep")
            if sent is None:
                return total
            if sent:
                total += len(sent)
                again = sum(1 for t in found if t.again)
                _log.info(
                    "sweep: published %d task(s): %d left unpublished, %d again (not started "
                    "within their redeliver_after)",
                    len(sent),
                    len(found) - again,
                    again,
                )
                self.hooks.happened(Event("swept", count=len(sent), reason=self.kind))
            if len(found) < limit:
                return total

    def _sweep_batch(
        self, session: Session, names: frozenset[str], limit: int
    ) -> tuple[list[ToPublish], list[str] | None]:
        """One batch: what was found, and the ids sent (``None``: the queue refused)."""
        connection = session.connection()
        found = to_publish(session, names, sweep_after=self.settings.sweep_after, limit=limit)
        if not found:
            return found, []
        try:
            sent = self._send([Message(t.task_id, t.name, t.queue) for t in found])
        except Exception as exc:
            _log.warning(
                "sweep: the queue is unavailable, %d task(s) wait: %s", len(found), first_line(exc)
            )
            return found, None
        mark_published(connection, sent, again=True)
        return found, sent

    # -- deliveries (in the queue's workers) -----------------------------------

    def deliver(self, name: str, task_id: str) -> Outcome:
        """One delivery of task ``task_id``'s message to the handler of ``name``.

        Starting the task is the toolkit's compare-and-set (``pending`` ->
        ``running``): a task that started already, ended, was cancelled while
        pending or does not exist runs nothing (logged, counted in
        :attr:`skipped`). Runs inside the hooks' ``around_delivery``.
        """
        with self.hooks.around_delivery(Delivery(self.kind, task_id, name)):
            try:
                job = self.worker().start(task_id)
            except TaskNotFoundError:
                return self._skip(UNKNOWN, f"task {task_id} does not exist (purged?)")
            except InvalidTransitionError as exc:
                return self._skip(SKIPPED, f"task {task_id} is {exc.current}: not started again")
            except Exception as exc:
                if not self.hooks.unavailable(
                    "bridge.deliver", exc, doing=f"task {task_id} not started; message handed back"
                ):
                    raise
                return Outcome(UNAVAILABLE)
            found = run(
                job,
                self._handlers[name],
                every=self.settings.heartbeat_every,
                hooks=self.hooks,
                interruptible=self._interruptible,
                stopped_by=self._stopped_by,
            )
            return Outcome(RAN, found or self._recorded(task_id, job.attempts))

    def _skip(self, what: str, why: str) -> Outcome:
        self.skipped += 1
        _log.info("delivery skipped (%d in this process): %s", self.skipped, why)
        return Outcome(what)

    def _recorded(self, task_id: str, attempt: int) -> Recorded | None:
        """How the toolkit recorded the end of this run (``None``: not known)."""
        try:
            with deadline(self.settings.deadline_seconds), self.engine.connect() as connection:
                return recorded(connection, task_id, attempt)
        except Exception as exc:
            if not self.hooks.unavailable("bridge.deliver", exc, doing=f"outcome of {task_id}"):
                raise
            return None
