"""blinker signals for task and operation transitions.

Every signal is sent only after the change it announces has been committed,
never for a change that was rolled back. Receivers get plain, immutable
snapshots (:class:`TaskChange`, :class:`OperationChange`), not ORM objects, so a
receiver cannot trigger lazy loads on a finished session.

Example::

    from tasktoolkit import signals

    @signals.task_state_changed.connect
    def log_change(sender, change, **extra):
        print(change.name, change.old_state, "->", change.new_state)
"""

from __future__ import annotations

from dataclasses import dataclass

from blinker import Namespace

__all__ = [
    "OperationChange",
    "TaskChange",
    "operation_finished",
    "operation_opened",
    "task_created",
    "task_state_changed",
]

_signals = Namespace()


@dataclass(frozen=True, slots=True)
class TaskChange:
    """A committed change of one task.

    ``old_state`` is ``None`` for a task that was just created.
    """

    task_id: str
    request_id: str | None
    resource_type: str
    resource_id: str
    name: str
    old_state: str | None
    new_state: str


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
