"""Writing operations: open one, record the end of its request, roll task counts up.

An operation is ``running`` until its request has ended *and* every task of it
is terminal. Whoever makes the last of those two things true (the middleware
at the end of the request, or the worker finishing the last task) finishes it,
in the same transaction, under the row lock its own count update took, so two
processes can never both finish it or miss finishing it.

These functions take a Core :class:`~sqlalchemy.engine.Connection` (a
session's ``session.connection()`` works too) and never commit.

Tasks deleted while active
--------------------------
A resource's tasks go with it on every delete path, including database
cascades nobody can observe (MariaDB fires no trigger for them). A task
deleted while ``pending`` or ``running`` would leave its operation counting
it as active, and so ``running`` for ever. The reaper finds such operations
(:func:`orphaned_operations`), counts the vanished tasks as ``cancelled`` and
finishes the operation when nothing is left active (:func:`settle_operation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, cast

from sqlalchemy import String, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.sql.dml import Update

from tasktoolkit.orm._expiry import DEFAULT_TTL, check_ttl
from tasktoolkit.orm._records import operations_table as _T
from tasktoolkit.orm._records import tasks_table as _TASKS
from tasktoolkit.orm._states import ACTIVE_TASK_STATES, OperationState, TaskState
from tasktoolkit.orm._types import utcnow
from tasktoolkit.signals import OperationChange

__all__ = [
    "OperationFields",
    "count_task_transition",
    "end_request",
    "open_operation",
    "orphaned_operations",
    "settle_operation",
]


@dataclass(frozen=True, slots=True)
class OperationFields:
    """What is known of an operation when its request starts."""

    id: str
    method: str
    path: str
    global_request_id: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    project_id: str | None = None
    user_id: str | None = None


def open_operation(
    connection: Connection,
    fields: OperationFields,
    *,
    ttl: timedelta | None = DEFAULT_TTL,
    now: datetime | None = None,
) -> OperationChange:
    """Insert a ``running`` operation; one statement, no commit.

    :param ttl: how long the operation is kept once finished; ``None`` keeps it.
    """
    ttl = check_ttl(ttl, what="operation ttl")
    now = now or utcnow()
    connection.execute(
        _INSERT,
        {
            "id": fields.id,
            "global_request_id": fields.global_request_id,
            "method": fields.method[:16],
            "path": fields.path[:2048],
            "action": fields.action,
            "resource_type": fields.resource_type,
            "resource_id": fields.resource_id,
            "project_id": fields.project_id,
            "user_id": fields.user_id,
            "state": OperationState.RUNNING.value,
            "ttl_seconds": None if ttl is None else int(ttl.total_seconds()),
            "created_at": now,
            "updated_at": now,
        },
    )
    return OperationChange(
        fields.id, OperationState.RUNNING.value, None, fields.method, fields.path
    )


def end_request(
    connection: Connection,
    operation_id: str,
    http_status: int,
    *,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    now: datetime | None = None,
) -> OperationChange | None:
    """Record the response status; finish the operation if no task is active.

    Also safe on an AUTOCOMMIT connection (the middleware uses one): the status
    update and each task-count update still serialise on the row, and the final
    move is a compare-and-set on ``state``, so exactly one party finishes it.

    :param action: the route's action, known only once the app has routed.
    :param resource_type: with ``resource_id``, the one resource the request
        targeted, when known; ``None`` keeps what was recorded.
    :returns: the finished operation's change, or ``None`` while tasks still run.
    """
    now = now or utcnow()
    if resource_type is None or resource_id is None:
        resource_type = resource_id = None
    params = {
        "op_id": operation_id,
        "op_status": http_status,
        "op_now": now,
        "op_action": None if action is None else action[:64],
        "op_resource_type": None if resource_type is None else resource_type[:64],
        "op_resource_id": None if resource_id is None else resource_id[:64],
    }
    if connection.dialect.update_returning:
        # One round trip instead of two: the row as this update left it.
        row = connection.execute(_END_RETURNING, params).one_or_none()
        if row is not None:
            return _finish_row(connection, operation_id, row, now)
    else:
        connection.execute(_END, params)
    return _finish_if_done(connection, operation_id, now)


def count_task_transition(
    connection: Connection,
    operation_id: str,
    old_state: str | None,
    new_state: str,
    *,
    now: datetime | None = None,
    count: int = 1,
) -> OperationChange | None:
    """Move ``count`` tasks of an operation from ``old_state`` (``None``: new) to ``new_state``.

    :returns: the operation's change when this finished it, else ``None``.
    """
    now = now or utcnow()
    statement = _COUNT[old_state, new_state]
    result = connection.execute(
        statement, {"op_id": operation_id, "op_now": now, "op_count": count}
    )
    if result.rowcount == 0 or new_state in ACTIVE_TASK_STATES:
        return None
    return _finish_if_done(connection, operation_id, now)


_FINISH_COLUMNS = (
    _T.c.state,
    _T.c.http_status,
    _T.c.method,
    _T.c.path,
    _T.c.ttl_seconds,
    _T.c.tasks_pending,
    _T.c.tasks_running,
    _T.c.tasks_failed,
    _T.c.tasks_cancelled,
)

# The statements of every mutating request and task transition, built once:
# building and coercing a statement costs more than its round trip to SQLite.
# Bind names are prefixed, as an UPDATE may not reuse a column's name.
_ID = bindparam("op_id", type_=_T.c.id.type)
_NOW = bindparam("op_now", type_=_T.c.updated_at.type)
_INSERT = insert(_T)
_END = (
    update(_T)
    .where(_T.c.id == _ID, _T.c.http_status.is_(None))
    .values(
        http_status=bindparam("op_status", type_=_T.c.http_status.type),
        updated_at=_NOW,
        # None keeps what was recorded.
        action=func.coalesce(bindparam("op_action", type_=String), _T.c.action),
        resource_type=func.coalesce(
            bindparam("op_resource_type", type_=String), _T.c.resource_type
        ),
        resource_id=func.coalesce(bindparam("op_resource_id", type_=String), _T.c.resource_id),
    )
)
_END_RETURNING = _END.returning(*_FINISH_COLUMNS)
_READ_FINISH = select(*_FINISH_COLUMNS).where(_T.c.id == _ID)
_FINISH = (
    update(_T)
    .where(_T.c.id == _ID, _T.c.state == OperationState.RUNNING.value)
    .values(
        state=bindparam("op_state", type_=_T.c.state.type),
        finished_at=_NOW,
        updated_at=_NOW,
        expires_at=bindparam("op_expires", type_=_T.c.expires_at.type),
    )
)


def _count_statement(old_state: str | None, new_state: str) -> Update:
    count = bindparam("op_count", type_=_T.c.tasks_pending.type)
    values: dict[str, object] = {"updated_at": _NOW}
    if old_state is not None:
        values[f"tasks_{old_state}"] = _T.c[f"tasks_{old_state}"] - count
    values[f"tasks_{new_state}"] = _T.c[f"tasks_{new_state}"] + count
    return update(_T).where(_T.c.id == _ID).values(values)


_COUNT: Mapping[tuple[str | None, str], Update] = MappingProxyType(
    {
        (old, new.value): _count_statement(old, new.value)
        for old in (None, *(s.value for s in TaskState))
        for new in TaskState
        if old != new.value
    }
)


def _finish_if_done(
    connection: Connection, operation_id: str, now: datetime
) -> OperationChange | None:
    row = connection.execute(_READ_FINISH, {"op_id": operation_id}).one_or_none()
    return _finish_row(connection, operation_id, row, now)


def _finish_row(
    connection: Connection, operation_id: str, row: Any, now: datetime
) -> OperationChange | None:
    """Finish the operation whose current row is ``row``, if nothing keeps it running."""
    if (
        row is None
        or row.state != OperationState.RUNNING
        or row.http_status is None
        or row.tasks_pending > 0
        or row.tasks_running > 0
    ):
        return None
    if row.http_status >= 400 or row.tasks_failed > 0:
        state = OperationState.FAILED
    elif row.tasks_cancelled > 0:
        state = OperationState.CANCELLED
    else:
        state = OperationState.SUCCEEDED
    expires_at = None if row.ttl_seconds is None else now + timedelta(seconds=row.ttl_seconds)
    result = connection.execute(
        _FINISH,
        {"op_id": operation_id, "op_state": state.value, "op_now": now, "op_expires": expires_at},
    )
    if result.rowcount != 1:
        return None
    return OperationChange(operation_id, state.value, row.http_status, row.method, row.path)


def orphaned_operations(connection: Connection, *, limit: int) -> list[str]:
    """Up to ``limit`` running operations that count more active tasks than they have,
    or whose request's end was recorded with nothing active, but not their finish."""
    active = (
        select(func.count())
        .select_from(_TASKS)
        .where(_TASKS.c.request_id == _T.c.id, _TASKS.c.state.in_(ACTIVE_TASK_STATES))
        .scalar_subquery()
    )
    candidates = (
        select(_T.c.id)
        # Running operations never expire: the expiry index finds them.
        .where(_T.c.expires_at.is_(None), _T.c.state == OperationState.RUNNING.value)
        .where(
            or_(
                _T.c.tasks_pending + _T.c.tasks_running > active,
                # The request's end was written but not the finish that follows
                # it (the middleware writes them in two autocommitted
                # statements, and the database went away in between).
                and_(
                    _T.c.http_status.is_not(None),
                    _T.c.tasks_pending + _T.c.tasks_running == 0,
                ),
            )
        )
        .limit(limit)
    )
    return list(connection.execute(candidates).scalars())


def settle_operation(
    connection: Connection, operation_id: str, now: datetime
) -> OperationChange | None:
    """Count the active tasks of an operation that vanished with their resource as cancelled.

    The operation's row is locked first (the lock every task transition and
    spawn takes to change its counts), then its active tasks are read, and the
    counts are rewritten only if they are still the ones read (a
    compare-and-set), so a concurrent spawn or transition is never mistaken
    for a vanished task. Run it in a short transaction of its own.

    :returns: the operation's change when this finished it.
    """
    row = connection.execute(
        select(_T.c.tasks_pending, _T.c.tasks_running)
        .where(_T.c.id == operation_id, _T.c.state == OperationState.RUNNING.value)
        .with_for_update()
    ).one_or_none()
    if row is None:
        return None
    states = list(
        connection.execute(
            select(_TASKS.c.state).where(
                _TASKS.c.request_id == operation_id, _TASKS.c.state.in_(ACTIVE_TASK_STATES)
            )
        ).scalars()
    )
    gone_pending = max(0, row.tasks_pending - states.count(TaskState.PENDING.value))
    gone_running = max(0, row.tasks_running - states.count(TaskState.RUNNING.value))
    if gone_pending + gone_running == 0:
        return _finish_if_done(connection, operation_id, now)
    result = cast(
        CursorResult[Any],
        connection.execute(
            update(_T)
            .where(
                _T.c.id == operation_id,
                _T.c.state == OperationState.RUNNING.value,
                _T.c.tasks_pending == row.tasks_pending,
                _T.c.tasks_running == row.tasks_running,
            )
            .values(
                tasks_pending=_T.c.tasks_pending - gone_pending,
                tasks_running=_T.c.tasks_running - gone_running,
                tasks_cancelled=_T.c.tasks_cancelled + gone_pending + gone_running,
                updated_at=now,
            )
        ),
    )
    if result.rowcount != 1:
        return None  # its counts moved meanwhile: the next sweep looks again
    return _finish_if_done(connection, operation_id, now)
