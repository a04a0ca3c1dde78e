"""The remote-control command that stops a running handler when its task is cancelled.

Celery's own ``revoke(terminate=True)`` is not used: on a prefork pool it
marks the child process as terminating, so when that process later dies
under another task, Celery does not count that task's message as lost (and
never hands it back). Nor is Celery's soft time limit (``SIGUSR1``): it
raises wherever the pool process is, also after the handler returned (while
the job records its outcome, or in Celery's own code), when the handler saw
the cancel first.

This command, run in each worker's main process, sends :data:`STOP_SIGNAL`
to the pool process running the task. There the bridge's handler of that
signal (:class:`Interruptions`) raises :class:`HandlerStopped` inside the
handler, wherever it waits (a ``time.sleep``, a socket), and only while a
handler runs: a late signal is dropped. The bridge then ends the task
``cancelled``. Only on a prefork pool: a ``solo`` or ``threads`` pool runs
handlers in the main process, which is never signalled, and the handler
stops at its next ``check_cancelled`` instead.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from celery.signals import worker_process_init
from celery.worker import state as worker_state
from celery.worker.control import control_command

__all__ = ["INTERRUPTIONS", "STOP_COMMAND", "STOP_SIGNAL", "HandlerStopped", "Interruptions"]

#: The command's name, as broadcast by the bridge.
STOP_COMMAND = "tasktoolkit_stop"
#: The signal that interrupts a handler (Celery's soft time limit keeps ``SIGUSR1``).
STOP_SIGNAL = signal.SIGUSR2


class HandlerStopped(Exception):
    """Raised inside a running handler whose task's cancel asked it to stop."""


class Interruptions:
    """Lets the stop command interrupt the handler running in this pool process, and
    nothing else: the signal raises only while :meth:`armed` is entered."""

    __slots__ = ("_armed", "_pid")

    def __init__(self) -> None:
        self._armed: str | None = None
        self._pid: int | None = None

    @contextmanager
    def armed(self, task_id: str) -> Iterator[None]:
        """While the block runs, :data:`STOP_SIGNAL` raises :class:`HandlerStopped` in it."""
        if not self.install():
            yield  # not a pool process's main thread: the cancel flag alone stops it
            return
        self._armed = task_id
        try:
            yield
        finally:
            self._armed = None

    def install(self) -> bool:
        """Handle :data:`STOP_SIGNAL` in this process (once); whether it can be (the main
        thread of a pool process can; a threads pool's threads cannot)."""
        pid = os.getpid()
        if self._pid != pid:
            try:
                signal.signal(STOP_SIGNAL, self._on_signal)
            except ValueError:  # not the main thread (a threads pool)
                return False
            self._pid = pid
        return True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        armed, self._armed = self._armed, None
        if armed is not None:  # else the handler is over: the signal came too late
            raise HandlerStopped(f"task {armed}: stopped, its cancel was asked")


#: The process's one: a signal's handler is the process's, and a pool process runs
#: one handler at a time, whichever bridge it belongs to.
INTERRUPTIONS = Interruptions()


def _install(**kwargs: Any) -> None:
    INTERRUPTIONS.install()


def _stop(state: Any, task_ids: list[str], **kwargs: Any) -> dict[str, str]:
    """Interrupt the handlers of these (cancelled) tasks where this worker runs them."""
    wanted = set(task_ids)
    stopped = []
    for request in list(worker_state.active_requests):
        pid = request.worker_pid
        if request.id in wanted and pid and pid != os.getpid():
            try:
                os.kill(pid, STOP_SIGNAL)
            except OSError:
                continue  # the process is gone: its task is the reaper's
            stopped.append(request.id)
    return {"ok": f"stopping {', '.join(stopped) or 'nothing'}"}


control_command(name=STOP_COMMAND, args=[("task_ids", list)], signature="<task_id> ...")(_stop)
# In each pool process from its start, so a stop never meets the signal's default action (exit).
worker_process_init.connect(_install, weak=False)
