"""Writing operations: open one, record the end of its request, roll task counts up.

An operation is ``running`` until its request has ended *and* every task of it
is terminal. Whoever makes the last of those two things true (the middleware
at the end of the request, or the worker finishing the last task) finishes it,
in the same transaction, under the row lock its own count update took, so two
processes can never both finish it or miss finishing it.

These functions take a Core :class:`~sqlalchemy.engine.Connection` (a
session's ``session.connection()`` works too) and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from tasktoolkit.orm._types import utcnow
from tasktoolkit.orm.expiry import DEFAULT_TTL, check_ttl
from tasktoolkit.orm.records import operations_table as _T
from tasktoolkit.orm.states import OperationState, TaskState
from tasktoolkit.signals import OperationChange

__all__ = ["OperationFields", "count_task_transition", "end_request", "open_operation"]


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
        insert(_T).values(
            id=fields.id,
            global_request_id=fields.global_request_id,
            method=fields.method[:16],
            path=fields.path[:2048],
            action=fields.action,
            resource_type=fields.resource_type,
            resource_id=fields.resource_id,
            project_id=fields.project_id,
            user_id=fields.user_id,
            state=OperationState.RUNNING.value,
            ttl_seconds=None if ttl is None else int(ttl.total_seconds()),
            created_at=now,
            updated_at=now,
        )
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
    values: dict[str, object] = {"http_status": http_status, "updated_at": now}
    if action is not None:
        values["action"] = action[:64]
    if resource_type is not None and resource_id is not None:
        values["resource_type"] = resource_type[:64]
        values["resource_id"] = resource_id[:64]
    connection.execute(
        update(_T).where(_T.c.id == operation_id, _T.c.http_status.is_(None)).values(values)
    )
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
    values: dict[str, object] = {"updated_at": now}
    if old_state is not None:
        values[f"tasks_{old_state}"] = _T.c[f"tasks_{old_state}"] - count
    values[f"tasks_{new_state}"] = _T.c[f"tasks_{new_state}"] + count
    result = connection.execute(update(_T).where(_T.c.id == operation_id).values(values))
    if result.rowcount == 0 or new_state in (TaskState.PENDING, TaskState.RUNNING):
        return None
    return _finish_if_done(connection, operation_id, now)


def _finish_if_done(
    connection: Connection, operation_id: str, now: datetime
) -> OperationChange | None:
    row = connection.execute(
        select(
            _T.c.state,
            _T.c.http_status,
            _T.c.method,
            _T.c.path,
            _T.c.ttl_seconds,
            _T.c.tasks_pending,
            _T.c.tasks_running,
            _T.c.tasks_failed,
            _T.c.tasks_cancelled,
        ).where(_T.c.id == operation_id)
    ).one_or_none()
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
        update(_T)
        .where(_T.c.id == operation_id, _T.c.state == OperationState.RUNNING.value)
        .values(state=state.value, finished_at=now, updated_at=now, expires_at=expires_at)
    )
    if result.rowcount != 1:
        return None
    return OperationChange(operation_id, state.value, row.http_status, row.method, row.path)
