"""Reading tasks and operations: filtered, scoped, keyset-paginated lists and lookups.

Everything the HTTP endpoints show is read through these functions, so the
rules of the contract live in one place:

- expired records (``expires_at <= now``, on the database's clock) are never
  returned; pending and running ones never expire, so they always are;
- a :class:`Scope` limits records to one project unless it allows all;
- lists are ordered by ``sort_key`` then ``id`` (default ``created_at desc,
  id desc``) and paginated by *marker*, the id of the last record seen. A page
  after a marker is a keyset condition, ``(sort_key, id) < (marker's)``, never
  an ``OFFSET``, so page N costs what page 1 costs, on the indexes of
  :mod:`tasktoolkit.orm._records`. A marker that is not a record of the same
  list (same filters, same scope) is refused with :class:`InvalidFilterError`.

Example::

    page = list_tasks(
        session,
        ListParams(states=("running",), limit=50),
        scope=Scope(project_id="demo"),
    )
    page.records, page.has_more
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import Select, and_, false, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session, selectinload
from sqlalchemy.sql.elements import ColumnElement

from tasktoolkit.errors import InvalidFilterError, OperationNotFoundError, TaskNotFoundError
from tasktoolkit.orm._clock import db_now
from tasktoolkit.orm._records import Operation, OperationResource, Task
from tasktoolkit.orm._states import ACTIVE_TASK_STATES, OperationState, TaskState

__all__ = [
    "ALL_PROJECTS",
    "ListParams",
    "Page",
    "Scope",
    "get_operation",
    "get_task",
    "list_operations",
    "list_tasks",
    "operation_tasks",
]

#: Tasks are shown with their attempts: one more query per list, not one per task.
_WITH_ATTEMPTS = selectinload(Task.attempt_records)
#: Operations with the resources they touched, likewise.
_WITH_RESOURCES = selectinload(Operation.resource_records)
#: Sort keys whose column may be NULL; NULLs sort last in both directions.
_NULLABLE_KEYS = frozenset({"finished_at"})

_R = TypeVar("_R", Task, Operation)


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose records a caller may see.

    :param project_id: the caller's project; a caller without one sees nothing
        (unless ``all_projects``).
    :param all_projects: every project's records (an admin).
    """

    project_id: str | None = None
    all_projects: bool = False


#: The scope that sees every project's records.
ALL_PROJECTS = Scope(all_projects=True)


@dataclass(frozen=True, slots=True)
class ListParams:
    """The filters, order and page of a list. Values are already validated names.

    :param states: keep records in one of these states (empty: any).
    :param names: keep tasks with one of these names (empty: any).
    :param request_id: keep the tasks of this operation / this operation.
    :param resource_type: keep the records of this resource type.
    :param resource_id: keep the records of the resource with this id.
    :param action: keep operations whose route's action is this (operations only).
    :param method: keep operations of this HTTP method (operations only).
    :param global_request_id: keep operations with this global request id, and
        the tasks of those operations.
    :param user_id: keep the records of this user.
    :param error_code: keep the tasks that failed with this code, and the
        operations whose first failure had it.
    :param queue: keep the tasks routed to this queue (tasks only).
    :param changes_since: keep records updated at or after this time.
    :param changes_before: keep records updated at or before this time.
    :param limit: the page size, 1..:attr:`MAX_LIMIT`.
    :param marker: the id of the last record of the previous page.
    """

    #: The page size when none is asked for.
    DEFAULT_LIMIT: ClassVar[int] = 100
    #: The largest page; larger limits are clamped to it by the endpoints.
    MAX_LIMIT: ClassVar[int] = 1000
    #: The keys a task list may be sorted by (then by ``id``, in the same direction).
    TASK_SORT_KEYS: ClassVar[tuple[str, ...]] = (
        "created_at",
        "updated_at",
        "finished_at",
        "name",
        "state",
    )
    #: The keys an operation list may be sorted by (operations have no ``name``).
    OPERATION_SORT_KEYS: ClassVar[tuple[str, ...]] = (
        "created_at",
        "updated_at",
        "finished_at",
        "state",
    )
    SORT_DIRS: ClassVar[tuple[str, ...]] = ("asc", "desc")

    states: Sequence[str] = ()
    names: Sequence[str] = ()
    request_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    action: str | None = None
    method: str | None = None
    global_request_id: str | None = None
    user_id: str | None = None
    error_code: str | None = None
    queue: str | None = None
    changes_since: datetime | None = None
    changes_before: datetime | None = None
    limit: int = 100
    marker: str | None = None
    sort_key: str = "created_at"
    sort_dir: str = "desc"


@dataclass(frozen=True, slots=True)
class Page(Generic[_R]):
    """One page of a list, and whether another follows."""

    records: list[_R] = field(default_factory=list)
    has_more: bool = False


def _live(model: type[Task] | type[Operation]) -> ColumnElement[bool]:
    # Active records are shown whatever their expires_at says: only finished
    # records expire, and a stray value must not hide work in progress.
    active = (
        Task.state.in_(ACTIVE_TASK_STATES)
        if model is Task
        else Operation.state == OperationState.RUNNING.value
    )
    return or_(model.expires_at.is_(None), model.expires_at > db_now(), active)


def _scoped(model: type[Task] | type[Operation], scope: Scope) -> list[ColumnElement[bool]]:
    if scope.all_projects:
        return []
    if scope.project_id is None:
        return [false()]
    return [model.project_id == scope.project_id]


def _check_time(value: datetime | None, what: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidFilterError(f"{what}: a time zone is required")


def _filters(
    model: type[Task] | type[Operation],
    params: ListParams,
    scope: Scope,
) -> list[ColumnElement[bool]]:
    _check_time(params.changes_since, "changes-since")
    _check_time(params.changes_before, "changes-before")
    if (
        params.changes_since is not None
        and params.changes_before is not None
        and params.changes_before < params.changes_since
    ):
        raise InvalidFilterError("changes-before is earlier than changes-since")
    where = [_live(model), *_scoped(model, scope)]
    if params.states:
        where.append(model.state.in_(sorted(set(params.states))))
    if params.names:
        if model is not Task:
            raise InvalidFilterError("name: operations have no name")
        where.append(Task.name.in_(sorted(set(params.names))))
    if params.request_id is not None:
        where.append((Task.request_id if model is Task else Operation.id) == params.request_id)
    for name in ("action", "method"):
        value = getattr(params, name)
        if value is not None:
            if model is not Operation:
                raise InvalidFilterError(f"{name}: tasks have no {name}")
            where.append(getattr(Operation, name) == value)
    if params.queue is not None:
        if model is not Task:
            raise InvalidFilterError("queue: operations have no queue")
        where.append(Task.queue == params.queue)
    if params.global_request_id is not None:
        of_request = Operation.global_request_id == params.global_request_id
        # A task keeps no global request id: its operation does (and its index finds them).
        where.append(
            of_request
            if model is Operation
            else Task.request_id.in_(select(Operation.id).where(of_request))
        )
    if params.user_id is not None:
        where.append(model.user_id == params.user_id)
    if params.error_code is not None:
        where.append(model.error_code == params.error_code)
    where += _resource_filters(model, params)
    if params.changes_since is not None:
        where.append(model.updated_at >= params.changes_since)
    if params.changes_before is not None:
        where.append(model.updated_at <= params.changes_before)
    return where


def _resource_filters(
    model: type[Task] | type[Operation], params: ListParams
) -> list[ColumnElement[bool]]:
    """A resource's records: for operations, those that targeted it or touched it (a bulk
    create touches many), found through the index of the resources they touched."""
    kind, ident = params.resource_type, params.resource_id
    if model is Task or ident is None:
        where = [] if kind is None else [model.resource_type == kind]
        return where + ([] if ident is None else [model.resource_id == ident])
    targeted = Operation.resource_id == ident
    touched = select(OperationResource.operation_id).where(OperationResource.resource_id == ident)
    if kind is not None:
        targeted = and_(targeted, Operation.resource_type == kind)
        touched = touched.where(OperationResource.resource_type == kind)
    return [or_(targeted, Operation.id.in_(touched))]


def _after(
    column: InstrumentedAttribute[Any],
    ident: InstrumentedAttribute[str],
    value: Any,
    marker_id: str,
    *,
    descending: bool,
    nullable: bool,
) -> ColumnElement[bool]:
    """Rows after ``(value, marker_id)`` in the order ``(column IS NULL), column, id``."""
    beyond_id = ident < marker_id if descending else ident > marker_id
    if value is None:
        # The marker is among the trailing NULLs: only NULLs with a further id follow.
        return and_(column.is_(None), beyond_id)
    beyond = column < value if descending else column > value
    # The redundant bound (column <= value) lets the database seek the index
    # instead of filtering from the first row.
    bound = column <= value if descending else column >= value
    keyset = and_(bound, or_(beyond, beyond_id))
    return or_(keyset, column.is_(None)) if nullable else keyset


def _page(
    session: Session,
    model: type[_R],
    params: ListParams,
    scope: Scope,
    sort_keys: Sequence[str],
) -> Page[_R]:
    if isinstance(params.limit, bool) or not isinstance(params.limit, int):
        raise InvalidFilterError(f"limit: expected an integer, got {params.limit!r}")
    if not 1 <= params.limit <= ListParams.MAX_LIMIT:
        raise InvalidFilterError(
            f"limit: must be from 1 to {ListParams.MAX_LIMIT}, got {params.limit}"
        )
    if params.sort_key not in sort_keys:
        raise InvalidFilterError(
            f"sort_key: {params.sort_key!r} is not one of {', '.join(sort_keys)}"
        )
    if params.sort_dir not in ListParams.SORT_DIRS:
        raise InvalidFilterError(f"sort_dir: {params.sort_dir!r} is not one of asc, desc")
    where = _filters(model, params, scope)
    column: InstrumentedAttribute[Any] = getattr(model, params.sort_key)
    ident: InstrumentedAttribute[str] = model.id
    descending = params.sort_dir == "desc"
    nullable = params.sort_key in _NULLABLE_KEYS
    if params.marker is not None:
        marker_value = session.execute(
            select(column).where(ident == params.marker, *where)
        ).one_or_none()
        if marker_value is None:
            raise InvalidFilterError(
                f"marker: {params.marker!r} is not a record of this list that you can see"
            )
        where.append(
            _after(
                column,
                ident,
                marker_value[0],
                params.marker,
                descending=descending,
                nullable=nullable,
            )
        )
    order: list[Any] = [column.is_(None)] if nullable else []
    order += [column.desc(), ident.desc()] if descending else [column.asc(), ident.asc()]
    statement: Select[_R] = select(model).where(*where).order_by(*order).limit(params.limit + 1)
    statement = statement.options(_WITH_ATTEMPTS if model is Task else _WITH_RESOURCES)
    rows = list(session.execute(statement).scalars())
    return Page(records=rows[: params.limit], has_more=len(rows) > params.limit)


def list_tasks(session: Session, params: ListParams, *, scope: Scope) -> Page[Task]:
    """One page of the tasks ``scope`` may see that match ``params``.

    :raises InvalidFilterError: a bad state, limit, sort, time range or marker.
    """
    _check_states(params, TaskState, "a task state")
    return _page(session, Task, params, scope, ListParams.TASK_SORT_KEYS)


def list_operations(session: Session, params: ListParams, *, scope: Scope) -> Page[Operation]:
    """One page of the operations ``scope`` may see that match ``params``.

    :raises InvalidFilterError: a bad state, limit, sort, time range or marker.
    """
    _check_states(params, OperationState, "an operation state")
    return _page(session, Operation, params, scope, ListParams.OPERATION_SORT_KEYS)


def _check_states(params: ListParams, states: type[StrEnum], what: str) -> None:
    for state in params.states:
        if state not in states._value2member_map_:
            raise InvalidFilterError(f"state: {state!r} is not {what}")


def get_task(
    session: Session,
    task_id: str,
    *,
    scope: Scope,
    resource_type: str | None = None,
    resource_id: str | None = None,
) -> Task:
    """The task ``task_id`` if ``scope`` may see it (and, when given, it is on that resource).

    :raises TaskNotFoundError: no such live task, or one the caller may not see.
    """
    where = [Task.id == task_id, _live(Task), *_scoped(Task, scope)]
    if resource_type is not None:
        where.append(Task.resource_type == resource_type)
    if resource_id is not None:
        where.append(Task.resource_id == resource_id)
    task = session.execute(select(Task).where(*where).options(_WITH_ATTEMPTS)).scalar_one_or_none()
    if task is None:
        raise TaskNotFoundError(f"no task {task_id!r}")
    return task


def get_operation(session: Session, operation_id: str, *, scope: Scope) -> Operation:
    """The operation ``operation_id`` if ``scope`` may see it.

    :raises OperationNotFoundError: no such live operation, or one the caller may not see.
    """
    operation = session.execute(
        select(Operation)
        .where(
            Operation.id == operation_id,
            _live(Operation),
            *_scoped(Operation, scope),
        )
        .options(_WITH_RESOURCES)
    ).scalar_one_or_none()
    if operation is None:
        raise OperationNotFoundError(f"no operation {operation_id!r}")
    return operation


def operation_tasks(session: Session, operation_id: str, *, scope: Scope) -> list[Task]:
    """The live tasks of an operation that ``scope`` may see, oldest first."""
    statement = (
        select(Task)
        .where(Task.request_id == operation_id, _live(Task), *_scoped(Task, scope))
        .order_by(Task.created_at, Task.id)
        .options(_WITH_ATTEMPTS)
    )
    return list(session.execute(statement).scalars())
