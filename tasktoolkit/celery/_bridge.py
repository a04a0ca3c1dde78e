"""The Celery bridge: tasks published after commit, run by handlers, swept when unpublished.

The API process and the Celery workers import the same bridge (as they do a
Celery app's task modules). In the API process it publishes each task named
by a handler (or by ``names``) once the transaction that spawned it has
committed, with the task id as the message; in a Celery worker process the
handler runs the task as a :class:`~tasktoolkit.orm.Job`. See
:mod:`tasktoolkit.celery._config` for which of Celery's semantics are used.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import Engine

from tasktoolkit._checks import check_queue, check_task_name
from tasktoolkit.errors import HandlerConflictError
from tasktoolkit.orm import Job, Worker, prepare_engine
from tasktoolkit.orm._events import DISPATCHER
from tasktoolkit.orm._publishing import backoffs, mark_published, unpublished
from tasktoolkit.orm._retry import short_sessions
from tasktoolkit.signals import TaskChange

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["CELERY_PREFIX", "CeleryBridge", "Handler"]

#: A handler runs one claimed task; it may return the task's result (a JSON object).
Handler = Callable[[Job], "dict[str, Any] | None"]
_H = TypeVar("_H", bound=Handler)
#: The Celery task name of the bridge's handler for toolkit task ``name``: ``tasktoolkit.name``.
CELERY_PREFIX = "tasktoolkit."
_log = logging.getLogger("tasktoolkit.celery")
#: One more try on a fresh connection (a pooled one the broker dropped), at once:
#: a broker that is down fails the publish in moments, never holds up a request.
_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}


class CeleryBridge:
    """Runs the toolkit's tasks on Celery, over RabbitMQ or Redis.

    :param app: the host's Celery app, or a broker URL (``amqp://...``,
        ``redis://...``) to make one from. Its broker must be RabbitMQ or Redis
        (:class:`~tasktoolkit.errors.InvalidBrokerError` otherwise); the bridge
        sets the app's prefetch to 1 (and publisher confirms on RabbitMQ).
    :param engine: the database of the tasks. Every session on it publishes
        the tasks it spawns (or re-queues) once it commits.
    :param names: more task names to publish, whose handlers live in the
        workers only (the API process need not import them).
    :param sweep_after: seconds a task may stay pending and unpublished
        before :meth:`sweep` publishes it.
    :param heartbeat_every: seconds between the heartbeats sent while a
        handler runs; default a third of the task's heartbeat timeout.

    Example::

        bridge = CeleryBridge("amqp://guest:guest@127.0.0.1//", engine)
        app = bridge.app                     # celery -A myapp.tasks worker

        @bridge.handler("l2_wiring")
        def wire(job):
            job.progress(50, "bound")        # the same Job as a database worker's
            return {"vlan": 42}              # the task's result
    """

    def __init__(
        self,
        app: Celery | str,
        engine: Engine,
        *,
        names: Iterable[str] = (),
        sweep_after: float = 60.0,
        heartbeat_every: float | None = None,
    ) -> None:
        from tasktoolkit.celery import _control  # noqa: F401  (the stop command, in workers)
        from tasktoolkit.celery._config import check_broker_url, configure

        if isinstance(app, str):
            from celery import Celery

            app = Celery("tasktoolkit", broker=check_broker_url(app), set_as_current=False)
        configure(app)
        if not isinstance(engine, Engine):
            raise TypeError(f"CeleryBridge needs an Engine, got {engine!r}")
        if sweep_after < 0 or (heartbeat_every is not None and heartbeat_every <= 0):
            raise ValueError("sweep_after must be >= 0 and heartbeat_every > 0 seconds")
        self.app: Celery = app
        self.engine = prepare_engine(engine)
        self.sweep_after = timedelta(seconds=sweep_after)
        self.heartbeat_every = heartbeat_every
        self._names = {check_task_name(n) for n in ([names] if isinstance(names, str) else names)}
        self._handlers: dict[str, Handler] = {}
        self._workers: dict[int, Worker] = {}
        self._lock = threading.Lock()
        #: Deliveries this process skipped: the task had started or ended (a
        #: duplicate or late message), or did not exist.
        self.skipped = 0
        self.engine.update_execution_options(**{DISPATCHER: self})

    def close(self) -> None:
        """Stop publishing from the engine, and let go of the Celery app's connection pool.

        The producer pools are kombu's, shared by the process's apps on the same
        broker: ``kombu.pools.reset()`` closes them, once nothing publishes any more.
        """
        self.engine.update_execution_options(**{DISPATCHER: None})
        self.app.close()

    # -- binding ----------------------------------------------------------

    @property
    def names(self) -> frozenset[str]:
        """The task names this bridge publishes: its handlers' and ``names``."""
        return frozenset(self._names | self._handlers.keys())

    def handler(self, name: str) -> Callable[[_H], _H]:
        """Bind the handler of task ``name`` (a decorator).

        :raises HandlerConflictError: ``name`` already has a handler on this bridge.
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
            self._handlers[name] = handler
            self._declare(name)
            return handler

        return bind

    def _declare(self, name: str) -> None:
        """The Celery task that runs deliveries of ``name``."""
        from tasktoolkit.celery._config import TASK_OPTIONS
        from tasktoolkit.celery._running import deliver

        def run(task_id: str) -> str:
            return deliver(self, name, task_id)

        run.__name__ = run.__qualname__ = f"run_{name}"
        self.app.task(name=CELERY_PREFIX + name, shared=False, **TASK_OPTIONS)(run)

    def handler_of(self, name: str) -> Handler:
        """The handler bound to ``name`` (``KeyError`` if none)."""
        return self._handlers[name]

    def worker(self) -> Worker:
        """This process's :class:`~tasktoolkit.orm.Worker` (one per process: Celery forks)."""
        pid = os.getpid()
        with self._lock:
            found = self._workers.get(pid)
            if found is None:
                found = self._workers[pid] = Worker(self.engine)
            return found

    # -- the dispatcher (after commit) -------------------------------------

    def dispatches(self, name: str) -> bool:
        """Whether tasks named ``name`` run on this bridge."""
        return name in self._names or name in self._handlers

    def publish(self, tasks: Sequence[TaskChange]) -> None:
        """Publish committed pending tasks, then mark them published.

        A re-queued task whose retry waits for its backoff is published with
        Celery's ``eta`` (its ``not_before``). A broker that cannot be reached is
        logged, never raised: the tasks stay unpublished and :meth:`sweep`
        publishes them later.
        """
        requeued = [t.task_id for t in tasks if t.old_state is not None]
        try:
            if requeued:
                with self.engine.connect() as connection:
                    later = backoffs(connection, requeued)
            else:
                later = {}
            sent = self._send([(t.task_id, t.name, t.queue) for t in tasks], later)
        except Exception as exc:
            _log.warning("%d task(s) not published, left for the sweeper: %s", len(tasks), exc)
            return
        try:
            with self.engine.begin() as connection:
                mark_published(connection, sent)
        except Exception as exc:  # published all the same: a sweep sends them once more
            _log.warning("%d published task(s) not marked published: %s", len(sent), exc)

    def _send(
        self,
        tasks: Sequence[tuple[str, str, str | None]],
        later: Mapping[str, datetime] | None = None,
    ) -> list[str]:
        """Publish ``(task id, name, queue)`` messages over one producer, those in
        ``later`` not before their time; the ids sent."""
        sent = []
        with self.app.producer_or_acquire() as producer:
            for task_id, name, queue in tasks:
                options: dict[str, Any] = {} if queue is None else {"queue": check_queue(queue)}
                if later and task_id in later:
                    options["eta"] = later[task_id]
                self.app.send_task(
                    CELERY_PREFIX + name,
                    args=[task_id],
                    task_id=task_id,
                    producer=producer,
                    retry=True,
                    retry_policy=_PUBLISH_RETRY,
                    **options,
                )
                sent.append(task_id)
        return sent

    def revoke(self, tasks: Sequence[TaskChange]) -> None:
        """Ask the Celery workers running these tasks to interrupt their handlers
        (a remote-control command; see :mod:`tasktoolkit.celery._control`): the
        handler gets Celery's ``SoftTimeLimitExceeded`` and the job ends ``cancelled``.

        The toolkit's cancel flag is set already; this only makes it quicker.
        """
        from tasktoolkit.celery._control import STOP_COMMAND

        ids = [t.task_id for t in tasks]
        try:
            self.app.control.broadcast(STOP_COMMAND, arguments={"task_ids": ids})
        except Exception as exc:
            _log.warning("stop of %s not sent (the cancel flag stands): %s", ids, exc)

    # -- the sweeper -------------------------------------------------------

    def sweep(self, *, older_than: timedelta | None = None, batch_size: int = 500) -> int:
        """Publish the tasks of this bridge still pending and unpublished after
        ``older_than`` (default ``sweep_after``); returns how many were published.

        Part of ``tasktoolkit reap --celery MODULE:BRIDGE``. Several sweepers can
        run at once: each row is taken by one (``SKIP LOCKED`` where the database
        has it). Stops at the first batch the broker refuses (logged).
        """
        waited = self.sweep_after if older_than is None else older_than
        sessions = short_sessions(self.engine)
        total = 0
        while True:
            with sessions() as session, session.begin():
                rows = unpublished(session, self.names, older_than=waited, limit=batch_size)
                if not rows:
                    return total
                try:
                    sent = self._send(rows)
                except Exception as exc:
                    _log.warning("sweep: broker unavailable, %d task(s) wait: %s", len(rows), exc)
                    return total
                mark_published(session.connection(), sent)
            total += len(sent)
            _log.info("sweep: published %d task(s) left unpublished", len(sent))
            if len(rows) < batch_size:
                return total
