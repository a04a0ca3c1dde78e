"""The remote-control command that stops a running handler when its task is cancelled.

Celery's own ``revoke(terminate=True)`` is not used: on a prefork pool it
marks the child process as terminating, so when that process later dies
under another task, Celery does not count that task's message as lost (and
never hands it back). This command, run in each worker's main process, sends
``SIGUSR1`` to the pool process running the task, which raises Celery's
``SoftTimeLimitExceeded`` inside the handler; the bridge then ends the task
``cancelled``. Only on a prefork pool: a ``solo`` or ``threads`` pool runs
handlers in the main process, where the signal means something else, and the
handler stops at its next ``check_cancelled`` instead.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from celery.worker import state as worker_state
from celery.worker.control import control_command

__all__ = ["STOP_COMMAND"]

#: The command's name, as broadcast by the bridge.
STOP_COMMAND = "tasktoolkit_stop"


def _stop(state: Any, task_ids: list[str], **kwargs: Any) -> dict[str, str]:
    """Interrupt the handlers of these (cancelled) tasks where this worker runs them."""
    wanted = set(task_ids)
    stopped = []
    for request in list(worker_state.active_requests):
        pid = request.worker_pid
        if request.id in wanted and pid and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGUSR1)
            except OSError:
                continue  # the process is gone: its task is the reaper's
            stopped.append(request.id)
    return {"ok": f"stopping {', '.join(stopped) or 'nothing'}"}


control_command(name=STOP_COMMAND, args=[("task_ids", list)], signature="<task_id> ...")(_stop)
