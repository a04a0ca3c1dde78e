"""What Celery is told of a delivery, so that its own tools say what the toolkit recorded.

The Celery task of a handler returns, or raises, according to the task's
recorded outcome, and Celery's task state, events and result backend (Flower,
``celery events``, ``AsyncResult``) follow:

============================================  =========================================
the toolkit recorded                          Celery
============================================  =========================================
``succeeded``                                 ``SUCCESS``, the task's result
``failed``                                    ``FAILURE``, :class:`TaskFailed` (its code
                                              and message)
``cancelled``                                 ``FAILURE``, :class:`TaskCancelled`
back to ``pending`` for another attempt       ``RETRY`` (the toolkit publishes the next
                                              attempt; Celery's own retry is not used)
a delivery that ran nothing (a duplicate, a   nothing: ``Ignore``, the message is
late message, no such task)                   acknowledged, no second result or event
the database unavailable at the start         the message goes back (``Reject(requeue=True)``)
============================================  =========================================

:class:`TaskFailed` is one of the Celery task's expected exceptions
(``throws``): the worker logs it in one line, without a traceback (the
toolkit's log has the handler's).
"""

from __future__ import annotations

import time
from typing import Any

from tasktoolkit.bridges import RAN, UNAVAILABLE, Outcome
from tasktoolkit.errors import TaskToolkitError
from tasktoolkit.orm import TaskState

__all__ = ["TaskCancelled", "TaskFailed", "report"]

#: Seconds a delivery waits before handing its message back while the database is away.
_DATABASE_PAUSE = 1.0


class TaskFailed(TaskToolkitError):
    """Celery's record of a task the toolkit recorded as failed: ``FAILURE``, with
    ``<error code>: <message>`` (as ``TaskFailure`` says it)."""

    code = "tasktoolkit.task_failed"


class TaskCancelled(TaskFailed):
    """Celery's record of a task the toolkit recorded as cancelled: ``FAILURE`` too."""

    code = "tasktoolkit.task_cancelled"


def report(outcome: Outcome) -> dict[str, Any] | None:
    """The return value of the Celery task for ``outcome``, or the exception it raises."""
    from celery.exceptions import Ignore, Reject, Retry

    if outcome.delivered == UNAVAILABLE:
        time.sleep(_DATABASE_PAUSE)  # not at once: the database may be back by then
        raise Reject("database unavailable: the message goes back", requeue=True)
    recorded = outcome.recorded
    if outcome.delivered != RAN or recorded is None:
        raise Ignore()  # ran nothing (or cannot say what): no second success, no failure
    error = f"{recorded.error_code or 'error'}: {recorded.error_message or ''}".rstrip(": ")
    if recorded.state == TaskState.SUCCEEDED:
        return recorded.result
    if recorded.state == TaskState.FAILED:
        raise TaskFailed(error)
    if recorded.state == TaskState.CANCELLED:
        raise TaskCancelled("cancelled as asked")
    # Back to pending for another attempt (or already running it elsewhere).
    when = recorded.retry_in
    raise Retry(f"the toolkit runs it again ({error})", exc=TaskFailed(error), when=when)
