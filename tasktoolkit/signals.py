"""blinker signals for task and operation transitions.

Every signal is sent only after the change it announces has been committed,
never for a change that was rolled back. Receivers get plain, immutable
snapshots (:class:`TaskChange`, :class:`OperationChange`), not ORM objects, so a
receiver cannot trigger lazy loads on a finished session.

A receiver's failure is the receiver's: the toolkit sends every signal through
:func:`send`, which logs a receiver that raises (with the signal's name and
the change) and goes on with the other receivers and the other signals. It
never turns a committed change into an error. Receivers are called
synchronously: connecting a coroutine function is refused (``TypeError``),
rather than its coroutine being made and never awaited.

Signals are for a host's own code; cross-cutting work (metrics, tracing)
belongs in a :class:`~tasktoolkit.hooks.Hook`, which sees more (attempts'
outcomes, batches, outages).

Example::

    from tasktoolkit import signals

    @signals.task_state_changed.connect
    def log_change(sender, change, **extra):
        print(change.name, change.old_state, "->", change.new_state)
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from blinker import ANY, NamedSignal, Namespace

__all__ = [
    "OperationChange",
    "TaskChange",
    "operation_finished",
    "operation_opened",
    "send",
    "task_created",
    "task_state_changed",
]

_log = logging.getLogger("tasktoolkit.signals")
_F = TypeVar("_F", bound=Callable[..., Any])


class _Signal(NamedSignal):
    """A blinker signal that refuses coroutine receivers when they connect."""

    def connect(self, receiver: _F, sender: Any = ANY, weak: bool = True) -> _F:
        if inspect.iscoroutinefunction(receiver) or inspect.iscoroutinefunction(
            getattr(receiver, "__call__", None)  # noqa: B004  (an object with async __call__)
        ):
            raise TypeError(
                f"{self.name}: {receiver!r} is a coroutine function; the toolkit's receivers "
                "are called synchronously (schedule your coroutine from a synchronous one)"
            )
        return super().connect(receiver, sender, weak)


class _Namespace(Namespace):
    def signal(self, name: str, doc: str | None = None) -> NamedSignal:
        if name not in self:
            self[name] = _Signal(name, doc)
        return self[name]


_signals = _Namespace()


@dataclass(frozen=True, slots=True)
class TaskChange:
    """A committed change of one task.

    ``old_state`` is ``None`` for a task that was just created; ``queue`` is
    where the task is routed (``None``: the default queue).

    A move that ends an attempt (from ``running``) says how: ``outcome`` is the
    attempt's (``succeeded``, ``failed``, ``cancelled``, or ``handed_back`` by
    a stopping worker; a retryable failure put back to ``pending`` is
    ``failed``), ``error_code`` its error's code; a move to ``failed`` that
    ends no attempt (``not_started``) has its code too. ``attempt`` is the number of
    the task's latest start (0 before the first). ``created_at``,
    ``started_at`` (of the latest attempt) and ``moved_at`` time the move:
    how long a task waited to start, how long an attempt ran.
    """

    task_id: str
    request_id: str | None
    resource_type: str
    resource_id: str
    name: str
    old_state: str | None
    new_state: str
    queue: str | None = None
    attempt: int = 0
    outcome: str | None = None
    error_code: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    moved_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OperationChange:
    """A committed change of one operation."""

    operation_id: str
    state: str
    http_status: int | None
    method: str
    path: str


task_created = _signals.signal(
    "task-created",
    doc="""A task was created. Sender: the task's resource type (a ``str``).
    Keyword argument: ``change``, a :class:`TaskChange` with ``old_state=None``.""",
)

task_state_changed = _signals.signal(
    "task-state-changed",
    doc="""A task moved from one state to another. Sender: the task's resource
    type (a ``str``). Keyword argument: ``change``, a :class:`TaskChange`.""",
)

operation_opened = _signals.signal(
    "operation-opened",
    doc="""An operation was written for a mutating request. Sender: ``None``.
    Keyword argument: ``change``, an :class:`OperationChange`.""",
)

operation_finished = _signals.signal(
    "operation-finished",
    doc="""An operation reached its final state. Sender: ``None``.
    Keyword argument: ``change``, an :class:`OperationChange`.""",
)


def send(
    signal: NamedSignal, change: TaskChange | OperationChange, sender: str | None = None
) -> None:
    """Send ``change`` to every receiver of ``signal``; one that raises is logged, not raised.

    Every receiver is called, whichever of them fails: a committed change is
    announced to all who listen.
    """
    if not signal.receivers or getattr(signal, "is_muted", False):
        return
    for receiver in signal.receivers_for(sender):
        try:
            receiver(sender, change=change)
        except Exception:
            _log.exception("a receiver of %s failed on %r", signal.name, change)
