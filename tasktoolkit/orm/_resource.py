"""The resource mixin: a host model that mixes it in can spawn tasks.

Schema choice (why a column per resource type)
----------------------------------------------
A resource's tasks must be deleted with it on *every* delete path:
``session.delete``, ORM bulk ``delete()``, a Core or raw SQL ``DELETE``, and a
database-level cascade from a parent row (network -> ports -> tasks), on
SQLite, PostgreSQL and MariaDB. Only a foreign key with ``ON DELETE CASCADE``
does that everywhere: a generic ``(resource_type, resource_id)`` pair has no
constraint to cascade, and triggers are not fired by MariaDB for cascaded
deletes.

So every resource model adds one nullable column to the single shared tasks
table, ``<resource_type>_id`` (``port_id``), referencing its primary key with
``ON DELETE CASCADE``, plus an index on it. All tasks stay in one table, so
the cross-resource queries (``/tasks?state=running``, an operation's tasks of
every resource type, a worker claiming across names) are single-table index
scans; the generic ``resource_type`` / ``resource_id`` columns are kept too,
for those queries and for display. (The alternative, a tasks table per
resource type as in SQLAlchemy's ``table_per_related`` example, cascades just
as well but turns every cross-resource query into a ``UNION``.)

The host's migrations add the column with
:func:`tasktoolkit.orm.migrations.add_resource_column`.

Example::

    class Port(TaskResource, Base):
        __tablename__ = "ports"
        __resource_type__ = "port"
        id: Mapped[str] = mapped_column(String(36), primary_key=True)

    port.spawn_tasks(["l2_wiring", "dhcp_provisioning"])
    session.commit()
    port.task_status          # "busy"
    select(Port).where(Port.task_status == "error")
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    and_,
    bindparam,
    case,
    exists,
    insert,
    inspect,
    or_,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import (
    Mapped,
    Session,
    make_transient_to_detached,
    object_session,
    relationship,
)
from sqlalchemy.sql.elements import ColumnElement

from tasktoolkit import context
from tasktoolkit._checks import RESOURCE_TYPE, check_queue, check_task_name
from tasktoolkit.errors import (
    CrossResourceDependencyError,
    DependencyCycleError,
    InvalidDependencyError,
    InvalidTaskNameError,
    InvalidTaskOptionError,
    InvalidTaskRulesError,
    NotAResourceError,
    ResourceTypeConflictError,
    TransientResourceError,
    UnknownDependencyError,
)
from tasktoolkit.hooks import SpawnInfo, hooks_of
from tasktoolkit.orm._clock import db_now, read_now
from tasktoolkit.orm._events import change_of, record_moves
from tasktoolkit.orm._ready import start_deadline
from tasktoolkit.orm._records import Task, tasks_table
from tasktoolkit.orm._rules import DEFAULT_NAME, DEFAULT_RULES, TaskRules, check_rules_table
from tasktoolkit.orm._states import ACTIVE_TASK_STATES, TaskState
from tasktoolkit.orm._types import UTCDateTime

__all__ = [
    "ResourceStatus",
    "TaskResource",
    "resource_class",
    "resource_types",
    "spawn_tasks",
]

_LAST_SPAWN = "tasktoolkit.last_spawn"


class ResourceStatus:
    """The values of :attr:`TaskResource.task_status`."""

    BUSY = "busy"
    ERROR = "error"
    CANCELLED = "cancelled"
    IDLE = "idle"


@dataclass(frozen=True, slots=True)
class _ResourceInfo:
    cls: type[TaskResource]
    resource_type: str
    column: Column[Any]
    pk_attr: str


# The class registry, like SQLAlchemy's own mapper registry: one entry per
# resource model, written once at class creation, read-only afterwards.
_REGISTRY: dict[str, _ResourceInfo] = {}


def resource_types() -> dict[str, type[TaskResource]]:
    """Every declared resource type and its model."""
    return {name: info.cls for name, info in _REGISTRY.items()}


def resource_class(resource_type: str) -> type[TaskResource] | None:
    """The model that declared ``resource_type``, or ``None``."""
    info = _REGISTRY.get(resource_type)
    return None if info is None else info.cls


class TaskResource:
    """Mixin for a host model whose rows have tasks.

    Declare ``__resource_type__`` (lower-case, ``port``); optionally
    ``__task_rules__``, a mapping of task names (``"*"`` for the rest) to
    :class:`~tasktoolkit.orm.TaskRules`. The model gets ``tasks`` (newest
    last), ``active_tasks``, :meth:`spawn_task`, :meth:`spawn_tasks`,
    :meth:`task_rules` and the hybrid :attr:`task_status`.
    """

    __resource_type__: ClassVar[str]
    __task_rules__: ClassVar[Mapping[str, TaskRules]] = {}

    if TYPE_CHECKING:
        tasks: Mapped[list[Task]]
        active_tasks: Mapped[list[Task]]
        __mapper__: Any
        __table__: Any

    def __init_subclass__(cls, **kw: Any) -> None:
        # Declarative maps the class in its own __init_subclass__, which runs
        # before this line whichever order the bases are listed in.
        super().__init_subclass__(**kw)
        if cls.__dict__.get("__abstract__") or "__mapper__" not in cls.__dict__:
            return
        if "__resource_type__" not in cls.__dict__:
            if any(
                isinstance(b, type) and issubclass(b, TaskResource) and "__mapper__" in b.__dict__
                for b in cls.__mro__[1:]
            ):
                return  # an inheriting model shares its parent's resource type
            raise ResourceTypeConflictError(f"{cls.__name__} must declare __resource_type__")
        _register(cls)

    @classmethod
    def task_rules(cls, name: str) -> TaskRules:
        """The rules of task ``name`` on this model: its entry, else ``"*"``, else the defaults."""
        return _named(cls.__task_rules__, name)

    # -- spawning ---------------------------------------------------------

    def spawn_task(self, name: str, **options: Any) -> Task:
        """Spawn one ``pending`` task named ``name`` on this resource.

        The task belongs to the current request's operation (none outside a
        request) and is written with the resource's session, so it commits or
        rolls back with the host's own changes. ``options`` as for
        :func:`spawn_tasks`.
        """
        return spawn_tasks(_session_of(self), [(self, name)], **options)[0]

    def spawn_tasks(self, names: Iterable[str], **options: Any) -> list[Task]:
        """Spawn one ``pending`` task per name on this resource, in one statement."""
        return spawn_tasks(_session_of(self), [(self, name) for name in names], **options)

    # -- derived status ---------------------------------------------------

    @hybrid_property
    def task_status(self) -> str:
        """``busy`` while a task is pending or running, ``error`` when the latest
        run of some task name failed, ``cancelled`` when none failed but the latest
        run of some task name was cancelled (its work was never done), else
        ``idle``. Expired tasks do not count.

        Works on an instance (one query) and in SQL:
        ``select(Port).where(Port.task_status == "busy")``.
        """
        session = object_session(self)
        if session is None:
            return ResourceStatus.IDLE
        cls = type(self)
        info = _REGISTRY[cls.__resource_type__]
        pk = getattr(cls, info.pk_attr)
        status = session.execute(
            select(cls.task_status).where(pk == getattr(self, info.pk_attr))
        ).scalar()
        return ResourceStatus.IDLE if status is None else str(status)

    @task_status.inplace.expression
    @classmethod
    def _task_status_expression(cls) -> ColumnElement[str]:
        info = _REGISTRY[cls.__resource_type__]
        return _status_expression(info, getattr(cls, info.pk_attr))


def _named(table: Mapping[str, TaskRules], name: str) -> TaskRules:
    """The rules of ``name`` in ``table``: its entry, else ``"*"``, else the defaults."""
    return table.get(name) or table.get(DEFAULT_NAME) or DEFAULT_RULES


def _live(table: Any) -> ColumnElement[bool]:
    """Not expired, by the database's clock when the statement runs (not when it is built).

    A host may build ``select(Port).where(Port.task_status == "error")`` once
    and reuse it; a relationship's loader is built once too.
    """
    return or_(table.c.expires_at.is_(None), table.c.expires_at > db_now())


def _status_expression(info: _ResourceInfo, pk: Any) -> ColumnElement[str]:
    t = tasks_table.alias("tt_status")
    later = tasks_table.alias("tt_later")
    fk_t = t.c[info.column.name]
    fk_later = later.c[info.column.name]
    busy = exists().where(fk_t == pk, t.c.state.in_(ACTIVE_TASK_STATES))
    # A newer run supersedes a failure even once it has expired itself: a
    # success kept 24 hours must not bring back a failure kept 7 days.
    newer_run = exists().where(
        fk_later == fk_t,
        later.c.name == t.c.name,
        (later.c.created_at > t.c.created_at)
        | and_(later.c.created_at == t.c.created_at, later.c.id > t.c.id),
    )

    def ended_last(state: TaskState) -> ColumnElement[bool]:
        """The latest run of some task name ended in ``state``."""
        return exists().where(fk_t == pk, t.c.state == state.value, _live(t), ~newer_run)

    return case(
        (busy, ResourceStatus.BUSY),
        (ended_last(TaskState.FAILED), ResourceStatus.ERROR),
        (ended_last(TaskState.CANCELLED), ResourceStatus.CANCELLED),
        else_=ResourceStatus.IDLE,
    )


def _register(cls: type[TaskResource]) -> None:
    resource_type = cls.__dict__["__resource_type__"]
    if not isinstance(resource_type, str) or not RESOURCE_TYPE.match(resource_type):
        raise ResourceTypeConflictError(
            f"{cls.__name__}.__resource_type__ must be lower-case letters, digits and '_' "
            f"(at most 39), got {resource_type!r}"
        )
    if resource_type in _REGISTRY:
        other = _REGISTRY[resource_type].cls
        raise ResourceTypeConflictError(
            f"resource type {resource_type!r} is declared twice: by "
            f"{other.__module__}.{other.__qualname__} and {cls.__module__}.{cls.__qualname__}"
        )
    if "__task_expiry__" in cls.__dict__:
        raise InvalidTaskRulesError(
            f"{cls.__name__}.__task_expiry__ is gone: give ttl and ttl_by_state in __task_rules__"
        )
    cls.__task_rules__ = check_rules_table(cls.__name__, cls.__task_rules__)
    mapper = cls.__mapper__
    if len(mapper.primary_key) != 1:
        raise ResourceTypeConflictError(
            f"{cls.__name__}: a task resource needs a single-column primary key"
        )
    pk = mapper.primary_key[0]
    column_name = f"{resource_type}_id"
    tasks = tasks_table
    if column_name in tasks.c:
        raise ResourceTypeConflictError(
            f"resource type {resource_type!r} would add column {column_name!r}, "
            "which the tasks table already has"
        )
    column: Column[Any] = Column(
        column_name, pk.type, ForeignKey(pk, ondelete="CASCADE"), nullable=True
    )
    tasks.append_column(column)
    Index(f"ix_tasktoolkit_tasks_{column_name}", column)
    Task.__mapper__.add_property(column_name, column)
    pk_attr = mapper.get_property_by_column(pk).key
    _REGISTRY[resource_type] = _ResourceInfo(cls, resource_type, column, pk_attr)

    _add_relationships(mapper, column, pk)


def _add_relationships(mapper: Any, column: Column[Any], pk: Column[Any]) -> None:
    """``tasks`` (owned: cascaded, expired ones left out) and the view-only ``active_tasks``."""
    order = (Task.created_at, Task.id)
    mapper.add_property(
        "tasks",
        relationship(
            Task,
            # Expired tasks are gone from every read at once, this one too; the
            # rows themselves still cascade with the resource (the foreign key).
            primaryjoin=and_(column == pk, _live(tasks_table)),
            foreign_keys=[column],
            cascade="all, delete-orphan",
            passive_deletes=True,
            order_by=order,
        ),
    )
    mapper.add_property(
        "active_tasks",
        relationship(
            Task,
            primaryjoin=and_(column == pk, Task.state.in_(ACTIVE_TASK_STATES)),
            foreign_keys=[column],
            viewonly=True,
            order_by=order,
        ),
    )


def _session_of(resource: TaskResource) -> Session:
    session = object_session(resource)
    if session is None:
        raise TransientResourceError(
            f"{type(resource).__name__} is not in a session: add and save it before spawning tasks"
        )
    return session


#: When a spawn's tasks are created: the database's time, but strictly after the
#: previous spawn of the session (``tt_after``), so that a later spawn sorts after it
#: even where the clock repeats a moment (SQLite's has milliseconds).
_AFTER = bindparam("tt_after", type_=UTCDateTime())
_SPAWNED_AT = case((_AFTER > db_now(), _AFTER), else_=db_now())
#: Every row of a spawn in one statement; the times it wrote come back with the rows.
_SPAWN = (
    insert(tasks_table)
    .values(
        created_at=_SPAWNED_AT,
        updated_at=_SPAWNED_AT,
        # Its name's start timeout (``tt_start``, NULL: none) counts from its spawn.
        start_deadline=start_deadline(_SPAWNED_AT, bindparam("tt_start", type_=Float())),
    )
    .returning(
        tasks_table.c.created_at, tasks_table.c.start_deadline, sort_by_parameter_order=True
    )
)


def _insert_spawned(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert the spawn's rows, and set on each the times the database gave it."""
    connection = session.connection()
    last = session.info.get(_LAST_SPAWN)
    after = None if last is None else last + timedelta(microseconds=1)
    for row in rows:
        row["tt_after"] = after
    written: list[tuple[datetime, datetime | None]]
    if connection.dialect.insert_executemany_returning_sort_by_parameter_order:
        written = [(r[0], r[1]) for r in connection.execute(_SPAWN, rows)]
    else:  # no INSERT ... RETURNING (MySQL): one read of the server's time first
        now = read_now(connection)
        at = now if after is None or now > after else after
        for row in rows:
            row.update(created_at=at, updated_at=at)
            row["start_deadline"] = start_deadline(at, row["tt_start"])
        connection.execute(insert(tasks_table), [_columns(row) for row in rows])
        written = [(row["created_at"], row["start_deadline"]) for row in rows]
    for row, (created_at, deadline) in zip(rows, written, strict=True):
        row.update(created_at=created_at, updated_at=created_at, start_deadline=deadline)
    session.info[_LAST_SPAWN] = max(created_at for created_at, _ in written)


def _columns(row: dict[str, Any]) -> dict[str, Any]:
    """The row's columns, without the spawn statement's own parameters."""
    return {key: value for key, value in row.items() if not key.startswith("tt_")}


def _persistent_task(row: dict[str, Any]) -> Task:
    """A Task for a row just inserted, as if loaded: every column set, nothing to flush."""
    # Mapper.class_manager.new_instance() makes an instance without __init__,
    # as the ORM's loader does; make_transient_to_detached() gives it its
    # identity and marks its values as loaded from the database.
    task: Task = inspect(Task).class_manager.new_instance()
    values = dict.fromkeys(_task_columns(), None)
    values.update(row)
    task.__dict__.update(values)
    make_transient_to_detached(task)
    return task


def _task_columns() -> list[str]:
    return [attr.key for attr in inspect(Task).column_attrs]


def spawn_tasks(
    session: Session,
    items: Sequence[tuple[TaskResource, str]] | Iterable[tuple[TaskResource, str]],
    *,
    message: str | None = None,
    rules: TaskRules | Mapping[str, TaskRules] | None = None,
    queue: str | None = None,
    after: Mapping[str, Iterable[str]] | None = None,
) -> list[Task]:
    """Spawn one ``pending`` task per ``(resource, name)`` pair, across resources.

    Used for bulk creates: every task of the request goes in with one
    statement. Nothing is written when any pair is invalid. Each task gets
    its name's rules (see :meth:`TaskResource.task_rules`) as they are now.

    :param message: an initial message for every task.
    :param rules: these rules for every task instead of their names' (a
        one-off spawn whose needs differ from the declaration); or a mapping of
        task names (``"*"`` for the rest) to rules, as ``__task_rules__``.
    :param queue: where the tasks are routed (a Celery queue; ``Worker(queues=...)``),
        ``None`` for the default queue (:class:`~tasktoolkit.errors.InvalidQueueError`
        unless 1 to 255 printable ASCII characters without spaces).
    :param after: per task name, the names of the tasks it runs after, among those
        spawned here on the same resource (``{"dhcp_provisioning": ["l2_wiring"]}``):
        it is claimed (or published) only once every one of them succeeded, and
        fails ``dependency_failed`` when one of them fails or is cancelled. Refused
        with a subclass of :class:`~tasktoolkit.errors.InvalidDependencyError`: a
        name this spawn does not make (:class:`~tasktoolkit.errors.UnknownDependencyError`),
        makes only on other resources (:class:`~tasktoolkit.errors.CrossResourceDependencyError`),
        or tasks that wait on each other (:class:`~tasktoolkit.errors.DependencyCycleError`).
    """
    items = list(items)
    if isinstance(rules, Mapping):
        try:
            rules = check_rules_table("spawn_tasks(rules=...)", rules)
        except InvalidTaskRulesError as exc:
            raise InvalidTaskOptionError(str(exc)) from None
    elif rules is not None and not isinstance(rules, TaskRules):
        raise InvalidTaskOptionError(f"rules must be TaskRules, got {rules!r}")
    queue = check_queue(queue)
    _check_items(session, items)
    order = _order(items, _check_after(after))
    if not items:
        return []
    ctx = context.current()
    connection = session.connection()
    hooks = hooks_of(connection)
    if not hooks:
        return _spawn(session, connection, items, order, ctx, message, rules, queue, None)
    operation_id = ctx.operation_id if ctx else None
    with hooks.around_spawn(SpawnInfo(operation_id, tuple(name for _, name in items))):
        trace = hooks.trace_context()
        return _spawn(session, connection, items, order, ctx, message, rules, queue, trace)


def _spawn(
    session: Session,
    connection: Connection,
    items: list[tuple[TaskResource, str]],
    order: list[_Order],
    ctx: context.RequestContext | None,
    message: str | None,
    rules: TaskRules | Mapping[str, TaskRules] | None,
    queue: str | None,
    trace_context: str | None,
) -> list[Task]:
    """Insert the checked ``items`` and count them; see :func:`spawn_tasks`."""
    options = {
        "message": message,
        "not_before": None,
        "queue": queue,
        "request_id": ctx.operation_id if ctx else None,
        "user_id": ctx.user_id if ctx else None,
        "trace_context": trace_context,
    }
    rows = _rows(items, order, options, ctx.project_id if ctx else None, rules)
    _lock_exclusive(session, items, rows)
    # One Core INSERT of every row (batched into multi-row VALUES by the
    # dialect), returning only the times the database gave them, then the Task
    # objects made straight from the same values: building each object through
    # its instrumented __init__ and flushing it through the unit of work costs
    # more than the INSERT itself.
    _insert_spawned(session, rows)
    created = [_persistent_task(_columns(row)) for row in rows]
    session.add_all(created)  # detached -> persistent: no SQL
    record_moves(
        session,
        [change_of(task, None) for task in created],
        opening=ctx.operation if ctx is not None else None,
        waiting=frozenset(task.id for task in created if task.waiting_on),
    )
    for resource, _ in items:
        loaded = inspect(resource).dict
        if "tasks" in loaded or "active_tasks" in loaded:
            session.expire(resource, ["tasks", "active_tasks"])
    return created


def _lock_exclusive(
    session: Session, items: list[tuple[TaskResource, str]], rows: list[dict[str, Any]]
) -> None:
    """Lock the resources that get an exclusive task, until the spawn commits.

    Exclusive tasks of one resource run in creation order (see
    :mod:`tasktoolkit.orm._ready`); with the lock, two spawns on one resource also
    commit in that order, so an earlier-created task never appears after a later
    one already started.
    """
    wanted: dict[str, set[Any]] = {}
    for (resource, _), row in zip(items, rows, strict=True):
        if row["exclusive"]:
            info = _REGISTRY[type(resource).__resource_type__]
            wanted.setdefault(info.resource_type, set()).add(getattr(resource, info.pk_attr))
    for resource_type in sorted(wanted):
        info = _REGISTRY[resource_type]
        pk = getattr(info.cls, info.pk_attr)
        session.execute(
            select(pk).where(pk.in_(sorted(wanted[resource_type]))).order_by(pk).with_for_update()
        )


def _check_items(session: Session, items: list[tuple[TaskResource, str]]) -> None:
    """Refuse any pair that cannot be spawned; flush resources not yet written."""
    needs_flush = False
    for resource, name in items:
        info = _REGISTRY.get(getattr(type(resource), "__resource_type__", ""))
        if info is None or not isinstance(resource, info.cls):
            raise NotAResourceError(f"{resource!r} is not a task resource")
        check_task_name(name)
        state = inspect(resource)
        if state.transient or state.detached or state.deleted or state.was_deleted:
            raise TransientResourceError(
                f"cannot spawn {name!r} on a {info.resource_type} that is not saved in a session"
            )
        if state.session is not session:
            raise TransientResourceError(f"{resource!r} belongs to another session")
        needs_flush = needs_flush or state.pending
    if needs_flush:
        session.flush()


@dataclass(frozen=True, slots=True)
class _Order:
    """A spawned task's place in its spawn: the columns ``after`` gives it."""

    after: str | None = None
    waiting_on: int = 0
    awaited: bool = False


_NO_ORDER = _Order()
_MAX_AFTER = 1024


def _check_after(after: object) -> dict[str, tuple[str, ...]]:
    """``after`` as checked names: ``{name: (names it runs after, ...)}``."""
    if after is None:
        return {}
    if not isinstance(after, Mapping):
        raise InvalidDependencyError(
            f"after must map task names to the names they run after, got {after!r}"
        )
    checked: dict[str, tuple[str, ...]] = {}
    for name, before in after.items():
        if isinstance(before, str | bytes) or not isinstance(before, Iterable):
            raise InvalidDependencyError(
                f"after[{name!r}] must be a list of task names, got {before!r}"
            )
        names = (name, *before)
        try:
            for each in names:
                check_task_name(each)
        except InvalidTaskNameError as exc:
            raise InvalidDependencyError(f"after: {exc}") from None
        if name in before:
            raise DependencyCycleError(f"after: {name!r} cannot run after itself")
        checked[name] = tuple(sorted(set(before)))
    _refuse_cycles(checked)
    return {name: before for name, before in checked.items() if before}


def _refuse_cycles(after: dict[str, tuple[str, ...]]) -> None:
    """:class:`DependencyCycleError` when names of ``after`` wait on each other."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            circle = " -> ".join([*path[path.index(name) :], name])
            raise DependencyCycleError(f"after: the tasks wait on each other: {circle}")
        if name in done:
            return
        for before in after.get(name, ()):
            visit(before, [*path, name])
        done.add(name)

    for name in sorted(after):
        visit(name, [])


def _order(
    items: list[tuple[TaskResource, str]], after: dict[str, tuple[str, ...]]
) -> list[_Order]:
    """Each item's :class:`_Order`; refuses names the spawn does not make on its resource."""
    if not after:
        return [_NO_ORDER] * len(items)
    spawned = {name for _, name in items}
    for name in sorted(after):
        if name not in spawned:
            raise UnknownDependencyError(f"after: {name!r} is not spawned here")
    on: dict[tuple[type, Any], Counter[str]] = {}
    keys = []
    for resource, name in items:
        key = (type(resource), inspect(resource).identity)
        keys.append(key)
        on.setdefault(key, Counter())[name] += 1
    order = []
    for key, (resource, name) in zip(keys, items, strict=True):
        here = on[key]
        before = after.get(name, ())
        for each in before:
            if not here[each]:
                error = CrossResourceDependencyError if each in spawned else UnknownDependencyError
                where = "only on other resources" if each in spawned else "not spawned here"
                raise error(f"after: {name!r} on {resource!r} runs after {each!r}, {where}")
        awaited = any(name in after.get(other, ()) for other in here)
        encoded = json.dumps(list(before), separators=(",", ":")) if before else None
        if encoded is not None and len(encoded) > _MAX_AFTER:
            raise InvalidDependencyError(f"after: {name!r} runs after too many names")
        order.append(_Order(encoded, sum(here[each] for each in before), awaited))
    return order


def _rows(
    items: list[tuple[TaskResource, str]],
    order: list[_Order],
    options: dict[str, Any],
    project_id: str | None,
    rules: TaskRules | Mapping[str, TaskRules] | None,
) -> list[dict[str, Any]]:
    """The rows of the tasks to insert, every row with the same keys."""
    # Every list sorts by (created_at, id): tasks spawned together share one
    # created_at, so their ids are handed out in ascending order to keep them in
    # spawn order (random uuid4s would shuffle them).
    ids = sorted(str(uuid.uuid4()) for _ in items)
    infos = [_REGISTRY[type(resource).__resource_type__] for resource, _ in items]
    # The other types' resource columns are None, so that a bulk spawn across
    # resource types stays one statement.
    no_resource = dict.fromkeys({info.column.name for info in infos})
    rows = []
    applied: dict[tuple[str, str], dict[str, Any]] = {}
    for task_id, info, (resource, name), place in zip(ids, infos, items, order, strict=True):
        pk_value = getattr(resource, info.pk_attr)
        key = (info.resource_type, name)
        if key not in applied:
            if rules is None:
                named = info.cls.task_rules(name)
            else:
                named = rules if isinstance(rules, TaskRules) else _named(rules, name)
            timeout = named.start_timeout
            applied[key] = {
                **named.row_values(),
                "tt_start": None if timeout is None else timeout.total_seconds(),
            }
        row = {
            **options,
            **applied[key],
            **no_resource,
            "after": place.after,
            "waiting_on": place.waiting_on,
            "awaited": place.awaited,
            "id": task_id,
            "resource_type": info.resource_type,
            "resource_id": str(pk_value),
            "name": name,
            "state": TaskState.PENDING.value,
            "project_id": getattr(resource, "project_id", None) or project_id,
            "attempts": 0,
            "cancel_requested": False,
            info.column.name: pk_value,
        }
        if place.waiting_on:
            # Its start deadline counts from the moment it becomes ready.
            row["tt_start"] = None
        rows.append(row)
    return rows
