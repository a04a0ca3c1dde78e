"""Writing operations: open one, record the end of its request, roll task counts up.

An operation is ``running`` until its request has ended *and* every task of it
is terminal. Whoever makes the last of those two things true (the middleware
at the end of the request, or the worker finishing the last task) finishes it,
in the same transaction, under the row lock its own count update took, so two
processes can never both finish it or miss finishing it.

These functions take a Core :class:`~sqlalchemy.engine.Connection` (a
session's ``session.connection()`` works too) and never commit. Every time
they write or compare (created, updated, finished, expires, the request's
deadline) is the database's, computed in the statement (see
:mod:`tasktoolkit.orm._clock`).

Requests that never ended
-------------------------
The end of a request is recorded when its response body is closed. A process
killed mid-request, or a WSGI client that never closes the body, leaves it
unrecorded. Every operation is opened with a ``request_deadline`` (its
request timeout, 10 minutes by default), cleared when the end is recorded;
the reaper ends the request of an operation past its deadline
(:func:`end_lost_request`): its state then follows its tasks, and with no task
at all it is ``failed`` with error code ``request_lost``.

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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from types import MappingProxyType
from typing import Any, cast

from sqlalchemy import (
    Float,
    String,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.selectable import CTE

from tasktoolkit._request_protocol import OperationFields, RequestEnd, RequestOperation, Target
from tasktoolkit.orm._clock import db_now, later, read_now
from tasktoolkit.orm._engine import supports_skip_locked
from tasktoolkit.orm._expiry import DEFAULT_TTL, MAX_TTL, check_ttl
from tasktoolkit.orm._records import operation_resources_table as _RESOURCES
from tasktoolkit.orm._records import operations_table as _T
from tasktoolkit.orm._records import tasks_table as _TASKS
from tasktoolkit.orm._states import ACTIVE_TASK_STATES, OperationState, TaskState
from tasktoolkit.orm._types import UTCDateTime
from tasktoolkit.signals import OperationChange

__all__ = [
    "CHANGES_CHANNEL",
    "DEFAULT_REQUEST_TIMEOUT",
    "REQUEST_LOST",
    "OperationFields",
    "Target",
    "check_request_timeout",
    "count_task_transition",
    "counted_with",
    "end_lost_request",
    "end_request",
    "end_requests",
    "finish_counted",
    "keep_first_failure",
    "lost_requests",
    "notify_changed",
    "open_operation",
    "open_or_count",
    "orphaned_operations",
    "pending_key",
    "record_ended_resources",
    "record_resources",
    "settle_operation",
    "write_finished",
]

#: How long a request may go without recording its end before the reaper ends it.
DEFAULT_REQUEST_TIMEOUT = timedelta(minutes=10)
#: The error code of an operation whose request never ended and that has no task.
REQUEST_LOST = "request_lost"


def check_request_timeout(value: object, what: str = "request_timeout") -> timedelta:
    """``value`` if it is a timedelta of at least a second (and not absurd); else ``ValueError``."""
    if not isinstance(value, timedelta):
        raise TypeError(f"{what} must be a timedelta, got {value!r}")
    if not timedelta(seconds=1) <= value <= MAX_TTL:
        raise ValueError(f"{what} must be from 1 s to {MAX_TTL.days} days, got {value}")
    return value


#: The PostgreSQL channel that says which tasks and operations changed (the payload: an id),
#: and which queues got a task to claim (the payload: :func:`pending_key`).
CHANGES_CHANNEL = "tasktoolkit_changes"
_CHANGED = func.unnest(bindparam("op_notify", type_=postgresql.ARRAY(String))).column_valued(
    "changed"
)
_NOTIFY = text(
    f"SELECT pg_notify('{CHANGES_CHANNEL}', changed) FROM unnest(CAST(:ids AS text[])) AS changed"
)


def pending_key(queue: str | None) -> str:
    """The key announcing a task made pending on ``queue`` (``None``: the default queue),
    which wakes the database workers waiting on that queue."""
    return f"pending:{queue or ''}"


def notify_changed(connection: Connection, ids: Iterable[str | None]) -> None:
    """Tell the waiters of every process that these records changed (or, for a
    :func:`pending_key`, that a queue has a task to claim).

    On PostgreSQL, one ``NOTIFY`` per id on :data:`CHANGES_CHANNEL`, delivered
    when the transaction commits (and never if it rolls back), in one
    statement. Elsewhere nothing: waiters poll.
    """
    if connection.dialect.name != "postgresql":
        return
    changed = sorted({i for i in ids if i is not None})
    if changed:
        connection.execute(_NOTIFY, {"ids": changed})


class _FromRow:
    """The operation's own ttl, read from its row."""


_FROM_ROW = _FromRow()


def _row(
    fields: OperationFields, ttl_seconds: int | None, request_timeout: timedelta | None
) -> dict[str, Any]:
    """The values of a new ``running`` operation, for :data:`_INSERT` and its kin; its
    times are the statement's (``request_timeout``: ``None`` for one written finished,
    whose request has ended)."""
    return {
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
        "ttl_seconds": ttl_seconds,
        "op_request_timeout": None if request_timeout is None else request_timeout.total_seconds(),
    }


def _ttl_seconds(ttl: timedelta | None) -> int | None:
    checked = check_ttl(ttl, what="operation ttl")
    return None if checked is None else int(checked.total_seconds())


def open_operation(
    connection: Connection,
    fields: OperationFields,
    *,
    ttl: timedelta | None = DEFAULT_TTL,
    request_timeout: timedelta = DEFAULT_REQUEST_TIMEOUT,
) -> OperationChange:
    """Insert a ``running`` operation; one statement, no commit.

    :param ttl: how long the operation is kept once finished; ``None`` keeps it.
    :param request_timeout: when the request has not recorded its end after
        this long, the reaper ends it (:func:`end_lost_request`).
    """
    request_timeout = check_request_timeout(request_timeout)
    connection.execute(_INSERT, _row(fields, _ttl_seconds(ttl), request_timeout))
    return OperationChange(
        fields.id, OperationState.RUNNING.value, None, fields.method, fields.path
    )


def open_or_count(
    connection: Connection,
    pending: RequestOperation,
    count: int,
    *,
    notify: Iterable[str | None] = (),
) -> bool:
    """Write the request's operation with ``count`` more pending tasks; one statement.

    Inserts the operation (``running``) or, when a transaction of the same
    request wrote it already, adds to its pending count. A row the request
    wrote finished when its response started, before a later spawn of it
    committed, is running again: it ends once the tasks do.

    :param notify: ids to :func:`notify_changed` in the same statement, where
        the database can (PostgreSQL: no round trip of its own).
    :returns: whether ``notify`` was sent.
    """
    row = _row(pending.fields, pending.ttl_seconds, pending.request_timeout)
    row["tasks_pending"] = count
    statement = _open_or_count(connection.dialect.name)
    if connection.dialect.name != "postgresql":
        connection.execute(statement, row)
        return False
    row["op_notify"] = sorted({i for i in notify if i is not None})
    connection.execute(statement, row)  # built with RETURNING the NOTIFY
    return True


#: Nothing known of what the request did.
_NO_TARGET = Target()


def write_finished(
    connection: Connection,
    pending: RequestOperation,
    http_status: int,
    *,
    target: Target = _NO_TARGET,
) -> OperationChange | None:
    """Write the operation of a request that spawned nothing, already finished; one statement.

    When a transaction of the request wrote it after all (the app committed
    a spawn while this ran), its end is recorded instead (:func:`end_request`).

    :returns: the finished operation's change.
    """
    action, resource_type, resource_id = target.cleaned()
    fields = replace(
        pending.fields, action=action, resource_type=resource_type, resource_id=resource_id
    )
    row = _row(fields, pending.ttl_seconds, None)
    del row["state"]  # the statement's: from the status
    row.update(op_status=http_status, op_ttl=pending.ttl_seconds)
    try:
        state = connection.execute(_INSERT_FINISHED, row).scalar_one()
    except IntegrityError:
        return end_request(connection, fields.id, http_status, target=target)
    return OperationChange(fields.id, state, http_status, fields.method, fields.path)


def end_request(
    connection: Connection,
    operation_id: str,
    http_status: int,
    *,
    target: Target = _NO_TARGET,
    read_back: bool = True,
) -> OperationChange | None:
    """Record the response status, and finish the operation if no task is active; one statement.

    Safe on an AUTOCOMMIT connection (the middleware uses one) and against
    workers finishing tasks at the same moment: the update serialises with
    their count updates on the row and reads the counts they left, and a
    worker finishes the operation only once the status is there, so exactly
    one party finishes it. A finished operation expires after the ttl it was
    opened with (its row's).

    :param target: what the request did, as far as known; ``None`` values keep
        what was recorded.
    :param read_back: where ``UPDATE ... RETURNING`` is missing (MariaDB), read
        the row back (one statement more) to tell whether this finished it;
        without it, the answer is ``None``.
    :returns: the finished operation's change, or ``None`` while tasks still run.
    """
    action, resource_type, resource_id = target.cleaned()
    params = {
        "op_id": operation_id,
        "op_status": http_status,
        "op_action": action,
        "op_resource_type": resource_type,
        "op_resource_id": resource_id,
    }
    if connection.dialect.name == "postgresql":
        params["op_notify"] = [operation_id]
        row = connection.execute(_END_RETURNING_NOTIFIED, params).one_or_none()
    elif connection.dialect.update_returning:
        row = connection.execute(_END_RETURNING, params).one_or_none()
    elif connection.execute(_END, params).rowcount == 1 and read_back:
        # No RETURNING (MariaDB): the row as it is now; this update finished
        # it if it carries this update's own finishing time.
        row = connection.execute(_READ_ENDED, params).one_or_none()
    else:
        row = None
    record_ended_resources(connection, [operation_id])
    if row is None or row.state == OperationState.RUNNING or not row.ended_here:
        return None
    return OperationChange(operation_id, row.state, http_status, row.method, row.path)


def end_requests(
    connection: Connection,
    ends: Sequence[RequestEnd],
    *,
    read_back: bool = False,
) -> list[OperationChange]:
    """Record the ends of many requests in one statement (an ``executemany`` of
    :func:`end_request`'s update), as the end writer does once per round; no commit.

    Each end finishes its operation when no task of it is active, as
    :func:`end_request` does; an operation that already has its status (its end
    written before) is left alone, so an end is never written twice. Every end
    of the round is at one time, the database's, read once for the round (one
    statement a round, whatever its size), which also tells the operations it
    finished from those a worker finished since.

    :param read_back: read the operations this finished (one statement more),
        to announce them.
    :returns: the changes of the operations this finished (with ``read_back``).
    """
    if not ends:
        return []
    now = read_now(connection)
    rows = []
    for end in sorted(ends, key=lambda e: e.operation_id):  # one lock order for every writer
        action, resource_type, resource_id = end.target.cleaned()
        rows.append(
            {
                "op_id": end.operation_id,
                "op_status": end.http_status,
                "op_now": now,
                "op_action": action,
                "op_resource_type": resource_type,
                "op_resource_id": resource_id,
            }
        )
    connection.execute(_END_ROUND, rows)
    ids = [end.operation_id for end in ends]
    record_ended_resources(connection, ids)
    notify_changed(connection, ids)
    if not read_back:
        return []
    return [
        OperationChange(row.id, row.state, row.http_status, row.method, row.path)
        for row in connection.execute(_READ_ENDED_MANY, {"op_ids": ids, "op_now": now})
    ]


def record_ended_resources(connection: Connection, operation_ids: Sequence[str]) -> None:
    """Keep the resources the tasks of these operations touched, as their requests end
    (the end writer's round, the reaper's end of a lost request); one statement.

    A request's own spawns and re-runs leave their resources to its end, off the
    request's thread: its transaction pays no statement for them (see :func:`record_moves
    <tasktoolkit.orm._events.record_moves>`).
    """
    if not operation_ids:
        return
    params = {"op_ids": sorted(set(operation_ids))}
    dialect = connection.dialect.name
    if dialect not in ("mysql", "mariadb"):
        connection.execute(_record_ended(dialect), params)
        return
    # InnoDB's INSERT ... SELECT locks the rows it reads (REPEATABLE READ): the
    # tasks a worker is moving, whose operation's row it takes next. A plain read
    # takes no lock; the insert then locks only what it writes.
    rows = connection.execute(_ENDED_TOUCHED, params).all()
    if rows:
        connection.execute(
            _INSERT_IGNORE,
            [{"operation_id": o, "resource_type": t, "resource_id": r} for o, t, r in rows],
        )


def _ignoring_repeats(dialect: str, source: Any) -> Insert:
    """``INSERT INTO`` the resources table ``FROM`` ``source``, ignoring a row already kept."""
    columns = ["operation_id", "resource_type", "resource_id"]
    if dialect == "postgresql":
        return postgresql.insert(_RESOURCES).from_select(columns, source).on_conflict_do_nothing()
    prefix = "OR IGNORE" if dialect == "sqlite" else "IGNORE"
    return insert(_RESOURCES).from_select(columns, source).prefix_with(prefix)


_ENDED_IDS: BindParameter[Any] = bindparam("op_ids", expanding=True)
#: The resources the tasks of ended requests touched (of written operations only: a
#: foreign key).
_ENDED_TOUCHED = (
    select(_TASKS.c.request_id, _TASKS.c.resource_type, _TASKS.c.resource_id)
    .distinct()
    .join(_T, _T.c.id == _TASKS.c.request_id)
    .where(_TASKS.c.request_id.in_(_ENDED_IDS))
)
_INSERT_IGNORE = insert(_RESOURCES).prefix_with("IGNORE")


def _record_ended(dialect: str) -> Insert:
    if dialect not in _RECORD_ENDED:
        _RECORD_ENDED[dialect] = _ignoring_repeats(dialect, _ENDED_TOUCHED)
    return _RECORD_ENDED[dialect]


_RECORD_ENDED: dict[str, Insert] = {}


def record_resources(connection: Connection, touched: Sequence[tuple[str, str, str]]) -> None:
    """Keep that operations touched resources: ``(operation_id, resource_type,
    resource_id)`` each; one statement. One already kept, or of an operation not
    written, is left out."""
    connection.execute(
        _record_resources(connection.dialect.name),
        [{"op_id": o, "op_resource_type": t, "op_resource_id": r} for o, t, r in touched],
    )


def _record_resources(dialect: str) -> Insert:
    """``INSERT ... SELECT`` from the operation's row (none: nothing), ignoring a repeat."""
    if dialect in _RECORD_RESOURCES:
        return _RECORD_RESOURCES[dialect]
    source = select(
        _T.c.id,
        bindparam("op_resource_type", type_=String),
        bindparam("op_resource_id", type_=String),
    ).where(_T.c.id == _ID)
    statement = _ignoring_repeats(dialect, source)
    _RECORD_RESOURCES[dialect] = statement
    return statement


_RECORD_RESOURCES: dict[str, Insert] = {}


def keep_first_failure(connection: Connection, operation_id: str, task_id: str) -> None:
    """Make the failure of ``task_id`` (just written) its operation's ``error``, unless
    the operation has one already; one statement."""
    connection.execute(_KEEP_FAILURE, {"op_id": operation_id, "op_task": task_id})


def _of_task(column: str) -> Any:
    return select(_TASKS.c[column]).where(_TASKS.c.id == bindparam("op_task")).scalar_subquery()


_KEEP_FAILURE = (
    update(_T)
    .where(_T.c.id == bindparam("op_id"), _T.c.error_code.is_(None))
    .values(
        error_code=_of_task("error_code"),
        error_message=_of_task("error_message"),
        error_task_id=_of_task("id"),
        error_task_name=_of_task("name"),
    )
)


def count_task_transition(
    connection: Connection,
    operation_id: str,
    old_state: str | None,
    new_state: str,
    *,
    count: int = 1,
) -> OperationChange | None:
    """Move ``count`` tasks of an operation from ``old_state`` (``None``: new) to ``new_state``.

    :returns: the operation's change when this finished it, else ``None``.
    """
    params = {"op_id": operation_id, "op_count": count}
    if new_state in ACTIVE_TASK_STATES:
        connection.execute(_COUNT[old_state, new_state], params)
        return None
    if connection.dialect.update_returning:
        # One round trip: the count moved, and the row as it left it (to finish it).
        row = connection.execute(_COUNT_RETURNING[old_state, new_state], params).one_or_none()
        return None if row is None else _finish_if_done(connection, operation_id, row)
    if connection.execute(_COUNT[old_state, new_state], params).rowcount == 0:
        return None
    return _finish_if_done(connection, operation_id)


def counted_with(
    moved: CTE, operation_id: str, old_state: str, new_state: str
) -> tuple[CTE, dict[str, Any]]:
    """The count of one task moved from ``old_state`` to ``new_state`` (which is not
    active), as a CTE of the statement moving it (PostgreSQL): ``moved`` is that move's
    CTE, returning a row only when the task moved, and the count applies only then; the
    CTE returns what :func:`finish_counted` needs. With its parameters.

    The move's CTE is read first (a one-time condition), so the task's row is locked
    before the operation's, in the order every move takes them.
    """
    statement = _COUNT_RETURNING[old_state, new_state].where(exists(select(moved.c[0])))
    return statement.cte("tt_counted"), {"op_id": operation_id, "op_count": 1}


def finish_counted(connection: Connection, operation_id: str, row: Any) -> OperationChange | None:
    """Finish the operation if the count that :func:`counted_with` returned (``row``) left
    it with no active task after its request ended; the operation's change, if it did."""
    return _finish_if_done(connection, operation_id, row)


# The statements of every mutating request and task transition, built once:
# building and coercing a statement costs more than its round trip to SQLite.
# Bind names are prefixed, as an UPDATE may not reuse a column's name. Their
# times are the database's (db_now), computed where they run.
_ID = bindparam("op_id", type_=_T.c.id.type)
_STATUS = bindparam("op_status", type_=_T.c.http_status.type)
#: No task of the operation is active.
_IDLE = (_T.c.tasks_pending == 0) & (_T.c.tasks_running == 0)


class _ended_at(ColumnElement[Any]):
    """The time the request's end is recorded at (:data:`_END`), kept for the read back.

    On MariaDB, which has no ``UPDATE ... RETURNING``, the end's time goes into
    a variable of the connection as it is written, so that the read back can
    tell an operation this end finished from one a worker finished just after.
    """

    type = UTCDateTime()
    inherit_cache = True

    def __init__(self, *, keep: bool) -> None:
        self.keep = keep


@compiles(_ended_at)
def _ended_at_default(element: _ended_at, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(db_now(), **kw)


@compiles(_ended_at, "mysql")
@compiles(_ended_at, "mariadb")
def _ended_at_mysql(element: _ended_at, compiler: SQLCompiler, **kw: Any) -> str:
    return "(@tt_ended := UTC_TIMESTAMP(6))" if element.keep else "@tt_ended"


def _final_state(
    status: ColumnElement[Any],
    failed: ColumnElement[Any],
    cancelled: ColumnElement[Any],
    error: ColumnElement[Any] | None = None,
) -> ColumnElement[str]:
    """The state an operation ends in, once its request has ended and no task is active.

    The one rule: ``failed`` when the response was 4xx/5xx, a task failed or
    the operation has an error of its own (``request_lost``), ``cancelled``
    when tasks were cancelled and none failed, else ``succeeded``. A request
    that never recorded its end has no status: its tasks decide.
    """
    failing = (status >= 400) | (failed > 0)
    if error is not None:
        failing = failing | error.is_not(None)
    return case(
        (failing, OperationState.FAILED.value),
        (cancelled > 0, OperationState.CANCELLED.value),
        else_=OperationState.SUCCEEDED.value,
    )


#: A new running operation: its times the database's; its request's deadline
#: ``op_request_timeout`` seconds on (``NULL``: none).
_OPENED = {
    "created_at": db_now(),
    "updated_at": db_now(),
    "request_deadline": later(db_now(), bindparam("op_request_timeout", type_=Float())),
}
_INSERT = insert(_T).values(_OPENED)
#: A request that spawned nothing: its operation, finished (no task, so only its status counts).
_INSERT_FINISHED = (
    insert(_T)
    .values(
        {
            **_OPENED,
            "state": _final_state(_STATUS, literal(0), literal(0)),
            "http_status": _STATUS,
            "finished_at": db_now(),
            "expires_at": later(db_now(), bindparam("op_ttl", type_=Float())),
        }
    )
    .returning(_T.c.state)
)
_ENDED_AT = _ended_at(keep=True)
#: The end finished the operation (with RETURNING: its own row as it left it).
_ENDED = (_T.c.state, _T.c.method, _T.c.path, _T.c.finished_at.is_not(None).label("ended_here"))


def _end_statement(ended_at: ColumnElement[Any]) -> Update:
    """The end of a request at ``ended_at``: its status, and its finish when no task is
    active (expiring after the operation's own ttl)."""
    return (
        update(_T)
        .where(
            _T.c.id == _ID, _T.c.http_status.is_(None), _T.c.state == OperationState.RUNNING.value
        )
        .values(
            http_status=_STATUS,
            request_deadline=None,
            updated_at=ended_at,
            # None keeps what was recorded.
            action=func.coalesce(bindparam("op_action", type_=String), _T.c.action),
            resource_type=func.coalesce(
                bindparam("op_resource_type", type_=String), _T.c.resource_type
            ),
            resource_id=func.coalesce(bindparam("op_resource_id", type_=String), _T.c.resource_id),
            # Finished here when no task is active. The status is the parameter,
            # not the column: MariaDB would read the column as this update set it.
            state=case(
                (_IDLE, _final_state(_STATUS, _T.c.tasks_failed, _T.c.tasks_cancelled)),
                else_=_T.c.state,
            ),
            finished_at=case((_IDLE, ended_at), else_=None),
            expires_at=case((_IDLE, later(ended_at, _T.c.ttl_seconds)), else_=None),
        )
    )


#: One request's end, at the database's time when it runs.
_END = _end_statement(_ENDED_AT)
#: A round of ends (the end writer's), at the database's time read for the round.
_ROUND_AT = bindparam("op_now", type_=_T.c.updated_at.type)
_END_ROUND = _end_statement(_ROUND_AT)
_END_RETURNING = _END.returning(*_ENDED)
#: Sends :func:`notify_changed`'s NOTIFY for the ids in ``op_notify``, from the
#: statement returning it (PostgreSQL), so that it costs no round trip.
_NOTIFIED = select(func.count(func.pg_notify(CHANGES_CHANNEL, _CHANGED))).scalar_subquery()
_END_RETURNING_NOTIFIED = _END.returning(*_ENDED, _NOTIFIED)
_READ_ENDED = select(
    _T.c.state,
    _T.c.method,
    _T.c.path,
    func.coalesce(_T.c.finished_at == _ended_at(keep=False), False).label("ended_here"),
).where(_T.c.id == _ID)
#: The operations a round of ends finished (their finishing time is the round's).
_READ_ENDED_MANY = select(_T.c.id, _T.c.state, _T.c.http_status, _T.c.method, _T.c.path).where(
    _T.c.id.in_(bindparam("op_ids", expanding=True)),
    _T.c.finished_at == _ROUND_AT,
    _T.c.state != OperationState.RUNNING.value,
)
#: What deciding to finish an operation reads of it.
_FINISH_COLUMNS = (
    _T.c.state,
    _T.c.http_status,
    _T.c.request_deadline,
    _T.c.method,
    _T.c.path,
    _T.c.ttl_seconds,
    _IDLE.label("idle"),
)
_READ_FINISH = select(*_FINISH_COLUMNS).where(_T.c.id == _ID)
_FINISH = (
    update(_T)
    .where(_T.c.id == _ID, _T.c.state == OperationState.RUNNING.value)
    .values(
        state=_final_state(
            _T.c.http_status, _T.c.tasks_failed, _T.c.tasks_cancelled, _T.c.error_code
        ),
        finished_at=db_now(),
        updated_at=db_now(),
        # The ttl it was opened with, which its row keeps (NULL keeps it).
        expires_at=later(db_now(), _T.c.ttl_seconds),
    )
)
# The reaper's end of a request that never recorded one: a compare-and-set on
# the deadline, so a late end of the request, or another reaper, wins or loses whole.
#: The operation never had a task.
_NO_TASK = (
    _T.c.tasks_pending
    + _T.c.tasks_running
    + _T.c.tasks_succeeded
    + _T.c.tasks_failed
    + _T.c.tasks_cancelled
    == 0
)
_REQUEST_LOST_MESSAGE = "its request never recorded its end, and spawned no task"


#: Seconds back from now to the start of the requests an operator bounds (negative;
#: ``NULL``: no bound).
_BOUND = bindparam("op_bound", type_=Float())


def _overdue() -> ColumnElement[bool]:
    """The request is past its deadline, or started before the operator's bound."""
    # Only requests in flight have a deadline, so the index on it keeps both
    # branches short however many operations there are.
    overdue: ColumnElement[bool] = _T.c.request_deadline.is_not(None) & (
        (_T.c.request_deadline <= db_now()) | (_T.c.created_at <= later(db_now(), _BOUND))
    )
    return overdue


def _bound(request_timeout: timedelta | None) -> float | None:
    return None if request_timeout is None else -request_timeout.total_seconds()


_END_LOST = (
    update(_T)
    .where(_T.c.id == _ID, _T.c.http_status.is_(None), _overdue())
    .values(
        request_deadline=None,
        updated_at=db_now(),
        # With no task at all, nothing else will say what became of it.
        error_code=case((_NO_TASK, REQUEST_LOST), else_=_T.c.error_code),
        error_message=case((_NO_TASK, _REQUEST_LOST_MESSAGE), else_=_T.c.error_message),
    )
)

_FINISH_RETURNING = _FINISH.returning(_T.c.state)
_READ_STATE = select(_T.c.state).where(_T.c.id == _ID)


def _open_or_count(dialect: str) -> Insert:
    """The spawn's statement: insert the operation, or add to its pending count."""
    if dialect in _OPEN_OR_COUNT:
        return _OPEN_OR_COUNT[dialect]
    reopen = {
        "state": OperationState.RUNNING.value,
        "finished_at": None,
        "expires_at": None,
    }
    statement: Insert
    if dialect in ("mysql", "mariadb"):
        mysql_insert = mysql.insert(_T).values(_OPENED)
        statement = mysql_insert.on_duplicate_key_update(
            tasks_pending=_T.c.tasks_pending + mysql_insert.inserted.tasks_pending,
            updated_at=mysql_insert.inserted.updated_at,
            **reopen,
        )
    else:
        upsert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_T).values(
            _OPENED
        )
        statement = upsert.on_conflict_do_update(
            index_elements=[_T.c.id],
            set_={
                "tasks_pending": _T.c.tasks_pending + upsert.excluded.tasks_pending,
                "updated_at": upsert.excluded.updated_at,
                **reopen,
            },
        )
        if dialect == "postgresql":
            statement = statement.returning(_NOTIFIED)  # see open_or_count
    _OPEN_OR_COUNT[dialect] = statement
    return statement


_OPEN_OR_COUNT: dict[str, Insert] = {}


def _count_statement(old_state: str | None, new_state: str) -> Update:
    count = bindparam("op_count", type_=_T.c.tasks_pending.type)
    values: dict[str, object] = {"updated_at": db_now()}
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

#: The count of a move that may end the operation's last active task, returning
#: what deciding to finish the operation needs (where the database has RETURNING).
_COUNT_RETURNING: Mapping[tuple[str | None, str], Update] = MappingProxyType(
    {key: statement.returning(*_FINISH_COLUMNS) for key, statement in _COUNT.items()}
)


def _finish_if_done(
    connection: Connection, operation_id: str, row: Any = None
) -> OperationChange | None:
    """Finish the operation if its request has ended and no task is active.

    :param row: the operation's :data:`_FINISH_COLUMNS` as just written (else read here).
    """
    if row is None:
        row = connection.execute(_READ_FINISH, {"op_id": operation_id}).one_or_none()
    if (
        row is None
        or row.state != OperationState.RUNNING
        # The request is over when its status is recorded, or when the reaper
        # cleared its deadline (a request that never recorded its end).
        or (row.http_status is None and row.request_deadline is not None)
        or not row.idle
    ):
        return None
    params = {"op_id": operation_id}
    if connection.dialect.update_returning:
        state = connection.execute(_FINISH_RETURNING, params).scalar()
    elif connection.execute(_FINISH, params).rowcount == 1:
        state = connection.execute(_READ_STATE, params).scalar()
    else:
        state = None
    if state is None:
        return None
    return OperationChange(operation_id, state, row.http_status, row.method, row.path)


def lost_requests(
    connection: Connection, *, limit: int, request_timeout: timedelta | None = None
) -> list[str]:
    """Up to ``limit`` operations whose request is past its deadline without an end,
    locked (``SKIP LOCKED`` where the database has it) until the transaction ends.

    :param request_timeout: also those whose request started longer ago than
        this, whatever their own deadline.
    """
    query = select(_T.c.id).where(_overdue()).order_by(_T.c.request_deadline).limit(limit)
    if supports_skip_locked(connection):
        query = query.with_for_update(skip_locked=True)
    return list(connection.execute(query, {"op_bound": _bound(request_timeout)}).scalars())


def end_lost_request(
    connection: Connection,
    operation_id: str,
    *,
    request_timeout: timedelta | None = None,
) -> tuple[bool, OperationChange | None]:
    """End the request of an operation past its deadline: its state follows its tasks.

    A compare-and-set on the deadline: nothing happens when the request
    recorded its end meanwhile, or another reaper ended it first.

    :param request_timeout: as for :func:`lost_requests`.
    :returns: whether this ended the request, and the operation's change when
        this finished the operation too.
    """
    result = connection.execute(
        _END_LOST, {"op_id": operation_id, "op_bound": _bound(request_timeout)}
    )
    if result.rowcount != 1:
        return False, None
    record_ended_resources(connection, [operation_id])
    return True, _finish_if_done(connection, operation_id)


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


def settle_operation(connection: Connection, operation_id: str) -> OperationChange | None:
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
        return _finish_if_done(connection, operation_id)
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
                updated_at=db_now(),
            )
        ),
    )
    if result.rowcount != 1:
        return None  # its counts moved meanwhile: the next sweep looks again
    notify_changed(connection, [operation_id])
    return _finish_if_done(connection, operation_id)
