"""One delivery of a task's message in a Celery worker: start it, run its handler, record it.

The message is a pointer (the task id). Starting the task is the toolkit's
compare-and-set (``pending`` -> ``running``), so a delivery of a task that
started already, ended, was cancelled while pending or does not exist (purged)
runs nothing: it is logged, counted and acknowledged. While the handler runs, a
thread sends the job's heartbeats; a handler interrupted by the revoke of a
cancel ends the task ``cancelled``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from tasktoolkit.errors import (
    InvalidTransitionError,
    TaskCancelRequested,
    TaskNotFoundError,
    TaskNotHeldError,
    database_unavailable,
)
from tasktoolkit.orm import Job

if TYPE_CHECKING:
    from tasktoolkit.celery._bridge import CeleryBridge

__all__ = ["RAN", "SKIPPED", "UNKNOWN", "deliver"]

#: What a delivery did: ran the handler, skipped a task that is not pending, or
#: found no such task.
RAN, SKIPPED, UNKNOWN = "ran", "skipped", "unknown"
#: The shortest and longest pause between two background heartbeats.
_HEARTBEAT_BOUNDS = (0.5, 60.0)
#: Seconds a delivery waits before handing its message back while the database is away.
_DATABASE_PAUSE = 1.0
_log = logging.getLogger("tasktoolkit.celery")


def deliver(bridge: CeleryBridge, name: str, task_id: str) -> str:
    """Run one delivery of task ``task_id`` (named ``name``); what it did.

    While the database is unavailable the message goes back to the broker
    (Celery's ``Reject(requeue=True)``) after a pause, to be delivered again.
    """
    from celery.exceptions import Reject

    try:
        job = bridge.worker().start(task_id)
    except TaskNotFoundError:
        return _skip(bridge, UNKNOWN, f"task {task_id} does not exist (purged?)")
    except InvalidTransitionError as exc:
        return _skip(bridge, SKIPPED, f"task {task_id} is {exc.current}: not started again")
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        _log.warning("task %s: database unavailable, message handed back: %s", task_id, exc)
        time.sleep(_DATABASE_PAUSE)
        raise Reject(str(exc), requeue=True) from None
    _run(bridge, name, job)
    return RAN


def _skip(bridge: CeleryBridge, what: str, why: str) -> str:
    bridge.skipped += 1
    _log.info("delivery skipped (%d in this process): %s", bridge.skipped, why)
    return what


def _run(bridge: CeleryBridge, name: str, job: Job) -> None:
    """The handler, inside the job's ``with`` block and its heartbeats."""
    from celery.exceptions import SoftTimeLimitExceeded

    handler = bridge.handler_of(name)
    try:
        with job, _Heartbeats(job, bridge.heartbeat_every):
            try:
                result = handler(job)
                if result is not None and not job.finished:
                    job.succeed(result=result)
            except SoftTimeLimitExceeded:
                if job.cancel_requested():  # the revoke of a cancel
                    raise TaskCancelRequested(f"task {job.id} cancelled") from None
                raise
    except TaskNotHeldError as exc:
        _log.warning("task %s: outcome not recorded: %s", job.id, exc)
    except Exception:
        # Recorded as the task's failure already; Celery only acknowledges.
        _log.exception("task %s (%s) failed", job.id, name)


class _Heartbeats:
    """A thread sending the job's heartbeats while the ``with`` block runs."""

    def __init__(self, job: Job, every: float | None) -> None:
        low, high = _HEARTBEAT_BOUNDS
        self.job = job
        self.every = every if every is not None else min(max(job.heartbeat_timeout / 3, low), high)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"tasktoolkit-heartbeat-{job.id}", daemon=True
        )

    def __enter__(self) -> _Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.job.heartbeat()
            except TaskNotHeldError:
                return  # taken away by the reaper: the outcome will not be recorded
            except Exception as exc:
                _log.warning("task %s: heartbeat not sent: %s", self.job.id, exc)
