"""Idempotency keys: reserve ``(project, key)`` with the request's operation, keep its response.

A mutating request carrying an ``Idempotency-Key`` writes its operation and
its key in one transaction, before the app runs (:func:`reserve`). The key's
primary key ``(project_id, key)`` decides between concurrent requests: the
insert is one that skips a duplicate instead of failing (``ON CONFLICT DO
NOTHING``; ``INSERT IGNORE`` on MariaDB), so exactly one of them inserts and
runs the app, on every database and across processes; the others read the
row the winner committed (their insert waited for it) and get its response,
a conflict, or a refusal. Once the response is sent it is kept on the key
(:func:`record_response`), before the request's end is written to its
operation.

The key belongs to its operation (``ON DELETE CASCADE``): it lives as long as
the operation and is purged with it. A key whose operation ended without a
response recorded (the reaper closed it: the process died) is free again,
and the next request with it takes it over, with a compare-and-set.

These functions take a Core :class:`~sqlalchemy.engine.Connection` and never commit.
"""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import Insert, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from tasktoolkit._request_protocol import StoredResponse
from tasktoolkit.errors import IdempotencyInProgressError, IdempotencyKeyReusedError
from tasktoolkit.orm._clock import db_now
from tasktoolkit.orm._expiry import DEFAULT_TTL
from tasktoolkit.orm._operations import DEFAULT_REQUEST_TIMEOUT, OperationFields, open_operation
from tasktoolkit.orm._records import idempotency_keys_table as _K
from tasktoolkit.orm._records import operations_table as _O
from tasktoolkit.orm._states import OperationState
from tasktoolkit.signals import OperationChange

__all__ = ["MAX_KEY_LENGTH", "StoredResponse", "free_key", "record_response", "reserve"]

#: The longest key (the column's size).
MAX_KEY_LENGTH = 255


def _skipping_duplicates(dialect: str) -> Insert:
    if dialect == "postgresql":
        return postgresql.insert(_K).on_conflict_do_nothing(index_elements=["project_id", "key"])
    if dialect == "sqlite":
        return sqlite.insert(_K).on_conflict_do_nothing(index_elements=["project_id", "key"])
    # MariaDB/MySQL. IGNORE also turns other errors into warnings, but every
    # value is checked before (lengths) or written just before (the operation).
    return insert(_K).prefix_with("IGNORE")


# The rowcount says who inserted: SQLAlchemy keeps an INSERT's only when asked.
_RESERVE = {
    name: _skipping_duplicates(name)
    .values(created_at=db_now())
    .execution_options(preserve_rowcount=True)
    for name in ("postgresql", "sqlite", "mysql")
}
# The statements of every keyed request, built once.
_THIS_KEY = (
    (_K.c.project_id == bindparam("k_project"))
    & (_K.c.key == bindparam("k_key"))
    & (_K.c.operation_id == bindparam("k_operation"))
    & _K.c.status.is_(None)
)
_TAKE_OVER = (
    update(_K)
    .where(_THIS_KEY)
    .values(operation_id=bindparam("k_new"), created_at=db_now())
)
_RECORD = (
    update(_K)
    .where(_THIS_KEY)
    .values(status=bindparam("k_status"), headers=bindparam("k_headers"), body=bindparam("k_body"))
)
_FREE = delete(_K).where(_THIS_KEY)
_READ = (
    select(_K.c.fingerprint, _K.c.operation_id, _K.c.status, _K.c.headers, _K.c.body, _O.c.state)
    .join(_O, _O.c.id == _K.c.operation_id)
    .where(_K.c.project_id == bindparam("project_id"), _K.c.key == bindparam("key"))
)


def _scope(project_id: str | None) -> str:
    # No project is a scope of its own; the column is part of the primary key.
    return project_id or ""


def reserve(
    connection: Connection,
    fields: OperationFields,
    *,
    key: str,
    fingerprint: str,
    ttl: timedelta | None = DEFAULT_TTL,
    request_timeout: timedelta = DEFAULT_REQUEST_TIMEOUT,
) -> OperationChange | StoredResponse:
    """Write the request's operation and reserve its key for it, or say why not.

    :param fields: the operation; its ``project_id`` scopes the key.
    :param request_timeout: as for :func:`~tasktoolkit.orm._operations.open_operation`.
    :param fingerprint: what the request is (its method, path and body), hashed.
    :returns: the opened operation (run the app), or the response to replay.
    :raises IdempotencyKeyReusedError: the key was sent with another request.
    :raises IdempotencyInProgressError: the request first sent with it still runs.
    """
    project = _scope(fields.project_id)
    opened = open_operation(connection, fields, ttl=ttl, request_timeout=request_timeout)
    values = {
        "project_id": project,
        "key": key,
        "fingerprint": fingerprint,
        "operation_id": fields.id,
    }
    dialect = "mysql" if connection.dialect.name == "mariadb" else connection.dialect.name
    if connection.execute(_RESERVE[dialect], values).rowcount == 1:
        return opened
    row = connection.execute(_READ, {"project_id": project, "key": key}).one_or_none()
    if row is not None and row.fingerprint != fingerprint:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was sent with another method, path or body"
        )
    if row is not None and row.status is not None:
        pairs: list[list[str]] = json.loads(row.headers or "[]")
        return StoredResponse(row.status, tuple((n, v) for n, v in pairs), row.body)
    if row is not None and row.state != OperationState.RUNNING:
        # Its request never recorded a response and the reaper closed its
        # operation: the key is free again, for whoever takes it first.
        taken = connection.execute(
            _TAKE_OVER,
            {
                "k_project": project,
                "k_key": key,
                "k_operation": row.operation_id,
                "k_new": fields.id,
            },
        )
        if taken.rowcount == 1:
            return opened
    raise IdempotencyInProgressError(
        "a request with this Idempotency-Key is still running; retry later"
    )


def record_response(
    connection: Connection,
    *,
    project_id: str | None,
    key: str,
    operation_id: str,
    response: StoredResponse,
) -> bool:
    """Keep the response of the keyed request that holds ``key``; one statement.

    :returns: whether it was kept (the key is still this operation's).
    """
    result = connection.execute(
        _RECORD,
        {
            "k_project": _scope(project_id),
            "k_key": key,
            "k_operation": operation_id,
            "k_status": response.status,
            "k_headers": json.dumps([list(pair) for pair in response.headers]),
            "k_body": response.body,
        },
    )
    return bool(result.rowcount == 1)


def free_key(
    connection: Connection, *, project_id: str | None, key: str, operation_id: str
) -> bool:
    """Let go of ``key`` for a request that kept nothing on it (the app refused it before
    doing anything), so the next request with it runs; one statement.

    :returns: whether it was freed (the key was still this operation's, without a response).
    """
    result = connection.execute(
        _FREE, {"k_project": _scope(project_id), "k_key": key, "k_operation": operation_id}
    )
    return bool(result.rowcount == 1)
