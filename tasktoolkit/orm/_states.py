"""Task and operation states, and the transitions the state machine allows.

Example::

    >>> can_transition(TaskState.PENDING, TaskState.RUNNING)
    True
    >>> parse_task_state("bogus")
    Traceback (most recent call last):
    ...
    tasktoolkit.errors.InvalidStateError: 'bogus' is not one of pending, running, ...
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from tasktoolkit.errors import InvalidStateError

__all__ = [
    "ACTIVE_TASK_STATES",
    "TERMINAL_TASK_STATES",
    "TRANSITIONS",
    "OperationState",
    "TaskState",
    "can_transition",
    "parse_operation_state",
    "parse_task_state",
]


class TaskState(StrEnum):
    """The states of a task."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OperationState(StrEnum):
    """The states of an operation."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: A task still in progress. Plain values, so that they bind in SQL as they are;
#: ``TaskState.RUNNING in ACTIVE_TASK_STATES`` holds too (a ``StrEnum`` equals its value).
ACTIVE_TASK_STATES: tuple[str, ...] = (TaskState.PENDING.value, TaskState.RUNNING.value)
#: A task whose state is final.
TERMINAL_TASK_STATES: tuple[str, ...] = (
    TaskState.SUCCEEDED.value,
    TaskState.FAILED.value,
    TaskState.CANCELLED.value,
)

#: For each state, the states a task may move to from it. Terminal states are final.
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset({TaskState.RUNNING, TaskState.CANCELLED, TaskState.FAILED}),
    TaskState.RUNNING: frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED}),
    TaskState.SUCCEEDED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}


_E = TypeVar("_E", bound=StrEnum)


def _parse(enum: type[_E], value: object) -> _E:
    if isinstance(value, str) and value in enum._value2member_map_:
        return enum(value)
    choices = ", ".join(member.value for member in enum)
    raise InvalidStateError(f"{value!r} is not one of {choices}")


def parse_task_state(value: object) -> TaskState:
    """The :class:`TaskState` named ``value``; :class:`InvalidStateError` if none is."""
    return _parse(TaskState, value)


def parse_operation_state(value: object) -> OperationState:
    """The :class:`OperationState` named ``value``; :class:`InvalidStateError` if none is."""
    return _parse(OperationState, value)


def can_transition(source: TaskState | str, target: TaskState | str) -> bool:
    """Whether a task in ``source`` may move to ``target``."""
    return parse_task_state(target) in TRANSITIONS[parse_task_state(source)]
