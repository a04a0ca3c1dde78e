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
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Insert, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from tasktoolkit.errors import IdempotencyInProgressError, IdempotencyKeyReusedError
from tasktoolkit.orm._clock import db_now
from tasktoolkit.orm._expiry import DEFAULT_TTL
from tasktoolkit.orm._operations import DEFAULT_REQUEST_TIMEOUT, OperationFields, open_operation
from tasktoolkit.orm._records import idempotency_keys_table as _K
from tasktoolkit.orm._records import operations_table as _O
from tasktoolkit.orm._states import OperationState
from tasktoolkit.signals import OperationChange

__all__ = ["MAX_KEY_LENGTH", "StoredResponse", "record_response", "reserve"]

#: The longest key (the column's size).
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The response a keyed request is replayed with.

    :param body: ``None`` when it was too large to keep (only the status and
        headers are replayed).
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes | None


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
            update(_K)
            .where(
                _K.c.project_id == project,
                _K.c.key == key,
                _K.c.operation_id == row.operation_id,
                _K.c.status.is_(None),
            )
            .values(operation_id=fields.id, created_at=db_now())
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
        update(_K)
        .where(
            _K.c.project_id == _scope(project_id),
            _K.c.key == key,
            _K.c.operation_id == operation_id,
            _K.c.status.is_(None),
        )
        .values(
            status=response.status,
            headers=json.dumps([list(pair) for pair in response.headers]),
            body=response.body,
        )
    )
    return bool(result.rowcount == 1)
