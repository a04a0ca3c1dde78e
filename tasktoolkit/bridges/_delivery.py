"""One delivery's run: the handler inside its job, its heartbeats, and what came of it.

The message is a pointer (the task id); the bridge has started the task
already (:meth:`~tasktoolkit.bridges.Bridge.deliver`). Here the handler runs
inside the job's ``with`` block, which records its outcome, while a thread
sends the job's heartbeats; then the bridge learns what the toolkit recorded,
so that the queue's own tools can say the same (a failed task is a failure
there too, not a success).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tasktoolkit.errors import TaskCancelRequested, TaskNotHeldError
from tasktoolkit.hooks import Hooks
from tasktoolkit.orm import Job, TaskState
from tasktoolkit.orm._publishing import Recorded

__all__ = ["RAN", "SKIPPED", "UNAVAILABLE", "UNKNOWN", "Heartbeats", "Outcome", "run"]

#: What a delivery did: ran the handler; skipped a task that is not pending (a
#: duplicate or late message, a task cancelled while pending); found no such
#: task; or could not reach the database (the message should go back).
RAN, SKIPPED, UNKNOWN, UNAVAILABLE = "ran", "skipped", "unknown", "unavailable"
#: The shortest and longest pause between two background heartbeats.
_HEARTBEAT_BOUNDS = (0.5, 60.0)
_log = logging.getLogger("tasktoolkit.bridges")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery did, for a backend to tell its queue.

    :param delivered: :data:`RAN`, :data:`SKIPPED`, :data:`UNKNOWN` or :data:`UNAVAILABLE`.
    :param recorded: after a run, what the toolkit recorded of the task
        (its state, error, result, and when it went back to ``pending``, how
        soon it runs again); ``None`` when nothing ran or it is not known.
    """

    delivered: str
    recorded: Recorded | None = None


def run(
    job: Job,
    handler: Callable[[Job], dict[str, Any] | None],
    *,
    every: timedelta | None,
    hooks: Hooks,
    interruptible: Callable[[Job], AbstractContextManager[object]],
    stopped_by: Callable[[BaseException], bool],
) -> Recorded | None:
    """Run ``handler`` as ``job``'s work, with background heartbeats ``every`` (default: a
    third of the task's heartbeat timeout); what was recorded when known without a read.

    :param interruptible: around the handler alone: where the queue's stop of
        a cancel may interrupt it.
    :param stopped_by: whether an exception is that interruption: the job then
        ends ``cancelled``.
    :returns: ``succeeded`` with the handler's result when the run went the
        plain way; ``None`` when the outcome must be read (the job failed,
        was cancelled, or was finished by the handler itself).
    """
    plain = False  # the handler returned and the job records its success
    try:
        with job, Heartbeats(job, every, hooks):
            try:
                with interruptible(job):
                    result = handler(job)
            except BaseException as exc:
                if stopped_by(exc) and job.cancel_requested():
                    raise TaskCancelRequested(f"task {job.id} cancelled") from None
                raise
            if not job.finished:  # else the handler finished it: read what it recorded
                if result is not None:
                    job.succeed(result=result)
                plain = True
        # The block may also end here with a failure or a cancel the job swallowed.
        return Recorded(TaskState.SUCCEEDED.value, result=result) if plain else None
    except TaskNotHeldError as exc:
        _log.warning("task %s: outcome not recorded: %s", job.id, exc)
    except Exception as exc:
        # Recorded as the task's failure already (or the database was away).
        if not hooks.unavailable("bridge.record", exc, doing=f"task {job.id}"):
            _log.exception("task %s (%s) failed", job.id, job.name)
    return None


class Heartbeats:
    """A thread sending the job's heartbeats while the ``with`` block runs."""

    def __init__(self, job: Job, every: timedelta | None, hooks: Hooks) -> None:
        low, high = _HEARTBEAT_BOUNDS
        self.job = job
        self.hooks = hooks
        self.every = (
            every.total_seconds()
            if every is not None
            else min(max(job.heartbeat_timeout / 3, low), high)
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"tasktoolkit-heartbeat-{job.id}", daemon=True
        )

    def __enter__(self) -> Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.job.heartbeat()
                self.hooks.available("bridge.heartbeat")
            except TaskNotHeldError:
                return  # taken away by the reaper: the outcome will not be recorded
            except Exception as exc:
                if not self.hooks.unavailable("bridge.heartbeat", exc, doing=f"task {self.job.id}"):
                    _log.warning("task %s: heartbeat not sent: %s", self.job.id, exc)
