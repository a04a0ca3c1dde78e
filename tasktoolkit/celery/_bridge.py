"""The Celery bridge: the bridge base's primitives on a Celery app.

The API process and the Celery workers import the same bridge (as they do a
Celery app's task modules). In the API process it publishes each task named
by a handler (or by ``names``) once the transaction that spawned it has
committed, with the task id as the message; in a Celery worker process the
handler runs the task as a :class:`~tasktoolkit.orm.Job`. See
:mod:`tasktoolkit.celery._config` for which of Celery's semantics are used,
and :mod:`tasktoolkit.celery._outcome` for what Celery is told of each run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from tasktoolkit._checks import check_queue
from tasktoolkit.bridges import Bridge, Message

if TYPE_CHECKING:
    from celery import Celery

    from tasktoolkit.orm import Job
    from tasktoolkit.toolkit import Toolkit

__all__ = ["CELERY_PREFIX", "CeleryBridge"]

#: The Celery task name of the bridge's handler for toolkit task ``name``: ``tasktoolkit.name``.
CELERY_PREFIX = "tasktoolkit."
#: One more try on a fresh connection (a pooled one the broker dropped), at once:
#: a broker that is down fails the publish in moments, never holds up a request.
_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}


class CeleryBridge(Bridge):
    """Runs the toolkit's tasks on Celery, over RabbitMQ or Redis.

    :param toolkit: the :class:`~tasktoolkit.Toolkit` of the tasks' database;
        its settings give the sweeper's and the heartbeats' knobs and the hooks.
    :param app: the host's Celery app, or a broker URL (``amqp://...``,
        ``redis://...``) to make one from. Its broker must be RabbitMQ or Redis
        (:class:`~tasktoolkit.errors.InvalidBrokerError` otherwise); the bridge
        sets the app's prefetch to 1 (and publisher confirms on RabbitMQ).
    :param names: more task names to publish, whose handlers live in the
        workers only (the API process need not import them).

    Example::

        toolkit = Toolkit(engine, Settings(sweep_after="1m"))
        bridge = CeleryBridge(toolkit, "amqp://guest:guest@127.0.0.1//")
        app = bridge.app                     # celery -A myapp.tasks worker

        @bridge.handler("l2_wiring")
        def wire(job):
            job.progress(50, "bound")        # the same Job as a database worker's
            return {"vlan": 42}              # the task's result
    """

    kind = "celery"

    def __init__(self, toolkit: Toolkit, app: Celery | str, *, names: Iterable[str] = ()) -> None:
        from tasktoolkit.celery import _control  # noqa: F401  (the stop command, in workers)
        from tasktoolkit.celery._config import check_broker_url, configure

        if isinstance(app, str):
            from celery import Celery

            app = Celery("tasktoolkit", broker=check_broker_url(app), set_as_current=False)
        configure(app)
        self.app: Celery = app
        super().__init__(toolkit, names=names)
        from tasktoolkit.celery._presence import Presence

        #: This bridge's Celery worker in the list of live workers (when Celery runs one).
        self.presence = Presence(self, self.settings.worker_beat_timeout.total_seconds())

    def close(self) -> None:
        """Stop publishing, and let go of the Celery app's connection pool.

        The producer pools are kombu's, shared by the process's apps on the same
        broker: ``kombu.pools.reset()`` closes them, once nothing publishes any more.
        """
        super().close()
        self.presence.close()
        self.app.close()

    # -- the primitives ------------------------------------------------------

    def _send(self, messages: Sequence[Message]) -> list[str]:
        """Publish each message as the Celery task of its name, over one producer."""
        sent = []
        with self.app.producer_or_acquire() as producer:
            for message in messages:
                options: dict[str, Any] = {}
                if message.queue is not None:
                    options["queue"] = check_queue(message.queue)
                if message.delay:
                    options["countdown"] = message.delay
                self.app.send_task(
                    CELERY_PREFIX + message.name,
                    args=[message.task_id],
                    task_id=message.task_id,
                    producer=producer,
                    retry=True,
                    retry_policy=_PUBLISH_RETRY,
                    **options,
                )
                sent.append(message.task_id)
        return sent

    def _stop(self, task_ids: Sequence[str]) -> None:
        """Broadcast the stop command (see :mod:`tasktoolkit.celery._control`): the
        handler gets :class:`~tasktoolkit.celery._control.HandlerStopped` and the job
        ends ``cancelled``."""
        from tasktoolkit.celery._control import STOP_COMMAND

        self.app.control.broadcast(STOP_COMMAND, arguments={"task_ids": list(task_ids)})

    def _interruptible(self, job: Job) -> AbstractContextManager[object]:
        from tasktoolkit.celery._control import INTERRUPTIONS

        return INTERRUPTIONS.armed(job.id)

    def _stopped_by(self, exc: BaseException) -> bool:
        from tasktoolkit.celery._control import HandlerStopped

        return isinstance(exc, HandlerStopped)

    def _declare(self, name: str) -> None:
        """The Celery task ``tasktoolkit.<name>`` that delivers ``name``'s messages."""
        from tasktoolkit.celery._config import TASK_OPTIONS
        from tasktoolkit.celery._outcome import TaskFailed, report

        def run(task_id: str) -> dict[str, Any] | None:
            return report(self.deliver(name, task_id))

        run.__name__ = run.__qualname__ = f"run_{name}"
        options = {**TASK_OPTIONS, "throws": (TaskFailed,)}
        self.app.task(name=CELERY_PREFIX + name, shared=False, **options)(run)
