"""The toolkit's own records: operations and tasks.

Both tables live in the toolkit's :data:`metadata`, separate from the host
app's. A resource model that mixes in :class:`~tasktoolkit.orm.TaskResource`
adds one nullable foreign-key column to the tasks table (``port_id`` for
resource type ``port``), so each task row points at its resource through a
real ``ON DELETE CASCADE`` constraint; see
``tasktoolkit/orm/_resource.py`` for why.

Each start of a task is an attempt: a :class:`TaskAttempt` row is written
when the attempt ends (in the transaction of the move that ends it), deleted
with its task by an ``ON DELETE CASCADE`` foreign key; the attempt in progress
is the task's own ``host`` and ``started_at``.

Operations are keyed by the request id. Their per-state task counts are plain
integer columns updated with atomic increments in the same transaction as the
task transition that changes them, so concurrent workers never lose a count
and the counts survive the tasks they describe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
    inspect,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from tasktoolkit.hooks import TRACE_CONTEXT_LENGTH
from tasktoolkit.orm._clock import db_now
from tasktoolkit.orm._states import TERMINAL_TASK_STATES, OperationState, TaskState
from tasktoolkit.orm._types import JSONObject, UTCDateTime, exact_string

__all__ = [
    "NAMING_CONVENTION",
    "IdempotencyKey",
    "Operation",
    "OperationResource",
    "ReaperWatch",
    "RecordBase",
    "Task",
    "TaskAttempt",
    "WorkerRecord",
    "attempts_table",
    "idempotency_keys_table",
    "metadata",
    "operation_resources_table",
    "operations_table",
    "reaper_watch_table",
    "tasks_table",
    "workers_table",
]

#: Constraint names, so that migrations are stable on every database.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_TASK_STATES = ", ".join(f"'{s.value}'" for s in TaskState)
_OPERATION_STATES = ", ".join(f"'{s.value}'" for s in OperationState)


class RecordBase(DeclarativeBase):
    """The declarative base of the toolkit's own records (not of the host's models)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


#: The toolkit's tables, for ``create_all`` and for Alembic's ``target_metadata``.
metadata = RecordBase.metadata


def _repr(obj: object, *fields: str) -> str:
    """A ``repr`` from already-loaded attributes only: it never triggers a load."""
    state = inspect(obj)
    shown = ", ".join(f"{f}={state.dict[f]!r}" for f in fields if f in state.dict)
    return f"<{type(obj).__name__} {shown}>"


class Operation(RecordBase):
    """What an API consumer asked for: one per mutating request, keyed by its request id."""

    __tablename__ = "tasktoolkit_operations"
    __table_args__ = (
        CheckConstraint(f"state IN ({_OPERATION_STATES})", name="state"),
        Index("ix_tasktoolkit_operations_created", "created_at", "id"),
        Index("ix_tasktoolkit_operations_project", "project_id", "created_at", "id"),
        # /operations?action=...|method=...|state=... for one project, newest
        # first, and /operations?resource_type=&resource_id= for one resource:
        # each seeks its prefix and reads in order, however long the history.
        Index(
            "ix_tasktoolkit_operations_project_action", "project_id", "action", "created_at", "id"
        ),
        Index(
            "ix_tasktoolkit_operations_project_method", "project_id", "method", "created_at", "id"
        ),
        Index("ix_tasktoolkit_operations_project_state", "project_id", "state", "created_at", "id"),
        Index(
            "ix_tasktoolkit_operations_resource", "resource_type", "resource_id", "created_at", "id"
        ),
        Index("ix_tasktoolkit_operations_expires", "expires_at"),
        # The reaper's lost requests: only requests still in flight have a deadline.
        Index("ix_tasktoolkit_operations_request_deadline", "request_deadline"),
        # The notifications' sweep: finished, not notified, in a window of finish times.
        Index("ix_tasktoolkit_operations_to_notify", "notified_at", "finished_at"),
        # The re-runs of an operation.
        Index("ix_tasktoolkit_operations_retry_of", "retry_of"),
        # /operations?global_request_id=|user_id=|error_code=, newest first; and
        # /tasks?global_request_id= (the tasks of the operations it finds).
        Index(
            "ix_tasktoolkit_operations_global_request", "global_request_id", "created_at", "id"
        ),
        Index("ix_tasktoolkit_operations_user", "user_id", "created_at", "id"),
        Index("ix_tasktoolkit_operations_error_code", "error_code", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(exact_string(40), primary_key=True)
    global_request_id: Mapped[str | None] = mapped_column(exact_string(40))
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(2048))
    action: Mapped[str | None] = mapped_column(exact_string(64))
    resource_type: Mapped[str | None] = mapped_column(exact_string(64))
    resource_id: Mapped[str | None] = mapped_column(exact_string(64))
    project_id: Mapped[str | None] = mapped_column(exact_string(64))
    user_id: Mapped[str | None] = mapped_column(exact_string(64))
    state: Mapped[str] = mapped_column(String(16), default=OperationState.RUNNING.value)
    http_status: Mapped[int | None] = mapped_column(Integer)
    #: When the reaper ends the operation if its request has not recorded its
    #: end; ``None`` once the end is recorded (or the request was found lost).
    request_deadline: Mapped[datetime | None]
    #: Why the operation failed: its own error (``request_lost``), or its first
    #: task's failure, kept when that task is re-run or gone.
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    #: The task whose failure :attr:`error_code` is, if a task's.
    error_task_id: Mapped[str | None] = mapped_column(exact_string(36))
    error_task_name: Mapped[str | None] = mapped_column(exact_string(128))
    #: The operation this one re-ran (``POST .../retry``), or ``None``.
    retry_of: Mapped[str | None] = mapped_column(exact_string(40))
    #: Seconds a finished operation is kept; ``None`` keeps it. Stored per row so
    #: that whichever process finishes the operation (often a worker) knows it.
    ttl_seconds: Mapped[int | None] = mapped_column(Integer)
    tasks_pending: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    tasks_running: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    tasks_succeeded: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    tasks_failed: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    tasks_cancelled: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(default=db_now())
    updated_at: Mapped[datetime] = mapped_column(default=db_now())
    finished_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    #: When the notification of its end was handed to the broker; ``None`` until
    #: then (and for ever where nothing sends notifications).
    notified_at: Mapped[datetime | None]

    #: Every resource the operation touched, kept after they are gone. Not
    #: loaded unless asked for.
    resource_records: Mapped[list[OperationResource]] = relationship(
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="(OperationResource.resource_type, OperationResource.resource_id)",
        lazy="select",
    )

    @property
    def error(self) -> dict[str, str] | None:
        """``{"code", "message"}`` (and ``task_id``, ``task_name`` for a task's failure)
        when the operation failed for a reason of its own or of its first failed task."""
        if self.error_code is None:
            return None
        error = {"code": self.error_code, "message": self.error_message or ""}
        if self.error_task_id is not None:
            error.update(task_id=self.error_task_id, task_name=self.error_task_name or "")
        return error

    @property
    def task_counts(self) -> dict[str, int]:
        """The number of this operation's tasks in each state."""
        return {state.value: getattr(self, f"tasks_{state.value}") or 0 for state in TaskState}

    def __repr__(self) -> str:
        return _repr(self, "id", "method", "path", "state")


class Task(RecordBase):
    """One activity on one resource, part of an operation or of none."""

    __tablename__ = "tasktoolkit_tasks"
    __table_args__ = (
        CheckConstraint(f"state IN ({_TASK_STATES})", name="state"),
        CheckConstraint("progress IS NULL OR (progress >= 0 AND progress <= 100)", name="progress"),
        Index("ix_tasktoolkit_tasks_resource", "resource_type", "resource_id", "created_at", "id"),
        Index("ix_tasktoolkit_tasks_state", "state", "created_at", "id"),
        Index("ix_tasktoolkit_tasks_request", "request_id", "created_at"),
        Index("ix_tasktoolkit_tasks_project", "project_id", "created_at", "id"),
        # /tasks?state=running for one project: seek (project, state) and read
        # the newest first, however many other projects' or states' rows exist.
        Index("ix_tasktoolkit_tasks_project_state", "project_id", "state", "created_at", "id"),
        Index("ix_tasktoolkit_tasks_expires", "expires_at"),
        # The reaper's pending tasks past their start deadline.
        Index("ix_tasktoolkit_tasks_start_deadline", "state", "start_deadline"),
        # Claims by queue: seek (pending, queue, no prerequisite left) and take
        # the oldest, however many tasks wait on prerequisites. The name and
        # not_before it carries let a metrics scrape read the active tasks per
        # name and queue, and the oldest ready one, from it alone.
        Index(
            "ix_tasktoolkit_tasks_queue",
            *("state", "queue", "waiting_on", "created_at", "id", "name", "not_before"),
        ),
        # The queue bridge's sweeper: pending tasks never published, oldest first.
        Index("ix_tasktoolkit_tasks_unpublished", "state", "published_at", "created_at"),
        # The stats' recent failures: failed tasks in a window of finish times.
        Index("ix_tasktoolkit_tasks_finished", "state", "finished_at"),
        # /tasks?user_id=|error_code=|queue=, newest first, whatever the state.
        Index("ix_tasktoolkit_tasks_user", "user_id", "created_at", "id"),
        Index("ix_tasktoolkit_tasks_error_code", "error_code", "created_at", "id"),
        Index("ix_tasktoolkit_tasks_queue_listed", "queue", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(exact_string(36), primary_key=True)
    #: The operation's id (the request id), or ``None`` for a task spawned outside
    #: a request. Not a foreign key: operations and tasks expire independently.
    request_id: Mapped[str | None] = mapped_column(exact_string(40))
    resource_type: Mapped[str] = mapped_column(exact_string(64))
    resource_id: Mapped[str] = mapped_column(exact_string(64))
    name: Mapped[str] = mapped_column(exact_string(128))
    state: Mapped[str] = mapped_column(String(16), default=TaskState.PENDING.value)
    progress: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_traceback: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(exact_string(255))
    project_id: Mapped[str | None] = mapped_column(exact_string(64))
    user_id: Mapped[str | None] = mapped_column(exact_string(64))
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=false())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    #: Seconds without a heartbeat after which a running task counts as lost.
    heartbeat_timeout: Mapped[int] = mapped_column(Integer, default=300, server_default=text("300"))
    heartbeat_at: Mapped[datetime | None]
    #: A ``pending`` task not started by then is failed ``not_started``; ``None``: never.
    start_deadline: Mapped[datetime | None]
    #: Claims skip the task until then (a retry's backoff); ``None``: at once.
    not_before: Mapped[datetime | None]
    #: The names of the tasks of its spawn (same operation and resource) it runs
    #: after, as a JSON list; ``None``: none.
    after: Mapped[str | None] = mapped_column(String(1024))
    #: How many of the tasks it runs after have not succeeded yet: claimable at 0.
    waiting_on: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    #: Some task of its spawn runs after it (its end releases or fails them).
    awaited: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: Its name is exclusive on its resource: it never runs beside another of that name.
    exclusive: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: The rest of the task name's rules, as applied at spawn (JSON; see ``_rules.py``).
    rules: Mapped[str | None] = mapped_column(String(255))
    #: Where the task is routed (a Celery queue, a database worker's ``queues``);
    #: ``None``: the default queue.
    queue: Mapped[str | None] = mapped_column(exact_string(255))
    #: When a queue bridge last published the task; ``None`` while it waits to
    #: be published (again, after a re-queue).
    published_at: Mapped[datetime | None]
    #: Seconds a published task may stay pending before a bridge publishes it again.
    redeliver_after: Mapped[int] = mapped_column(Integer, default=900, server_default=text("900"))
    created_at: Mapped[datetime] = mapped_column(default=db_now())
    started_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=db_now())
    finished_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    #: What the worker reported with its success: a JSON object of at most 16 KiB.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONObject())
    #: The W3C trace context the task was spawned in (``tasktoolkit.hooks``), for
    #: whoever starts it to continue that trace; never shown.
    trace_context: Mapped[str | None] = mapped_column(String(TRACE_CONTEXT_LENGTH))

    #: The attempts that ended, oldest first (the one in progress is the task's own
    #: ``host`` and ``started_at``). Not loaded unless asked for.
    attempt_records: Mapped[list[TaskAttempt]] = relationship(
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="TaskAttempt.number",
        lazy="select",
    )

    @property
    def error(self) -> dict[str, str] | None:
        """``{"code", "message"}`` of a failed task, or ``None``."""
        if self.error_code is None and self.error_message is None:
            return None
        return {"code": self.error_code or "error", "message": self.error_message or ""}

    @property
    def is_terminal(self) -> bool:
        """Whether the task has reached a final state."""
        return self.state in TERMINAL_TASK_STATES

    def __repr__(self) -> str:
        return _repr(self, "id", "resource_type", "resource_id", "name", "state")


class IdempotencyKey(RecordBase):
    """An ``Idempotency-Key`` of a project, the request it was first sent with, and its response.

    Its operation's row is written in the same transaction and owns it
    (``ON DELETE CASCADE``): a key lives as long as its operation and is
    purged with it. ``status`` is ``None`` while the first request runs; a
    ``body`` of ``None`` with a ``status`` is a response too large to keep.
    """

    __tablename__ = "tasktoolkit_idempotency_keys"

    project_id: Mapped[str] = mapped_column(exact_string(64), primary_key=True)
    key: Mapped[str] = mapped_column(exact_string(255), primary_key=True)
    #: SHA-256 (hex) of the method, path, query string and body.
    fingerprint: Mapped[str] = mapped_column(String(64))
    operation_id: Mapped[str] = mapped_column(
        exact_string(40),
        # Named here: the convention's name would pass PostgreSQL's 63 characters.
        ForeignKey(
            "tasktoolkit_operations.id",
            ondelete="CASCADE",
            name="fk_tasktoolkit_idempotency_keys_operation",
        ),
        index=True,
    )
    created_at: Mapped[datetime] = mapped_column(default=db_now())
    status: Mapped[int | None] = mapped_column(Integer)
    #: The replayed headers, as a JSON list of ``[name, value]`` pairs.
    headers: Mapped[str | None] = mapped_column(Text)
    body: Mapped[bytes | None] = mapped_column(
        LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")
    )

    def __repr__(self) -> str:
        return _repr(self, "project_id", "key", "operation_id", "status")


class OperationResource(RecordBase):
    """A resource an operation touched (spawned or re-ran a task on), kept after it is gone.

    Owned by its operation (``ON DELETE CASCADE``): purged with it.
    ``/operations?resource_id=`` finds a bulk operation from any of its
    resources through the index on ``(resource_id, resource_type)``.
    """

    __tablename__ = "tasktoolkit_operation_resources"
    __table_args__ = (
        Index("ix_tasktoolkit_operation_resources_resource", "resource_id", "resource_type"),
    )

    operation_id: Mapped[str] = mapped_column(
        exact_string(40),
        ForeignKey(
            "tasktoolkit_operations.id",
            ondelete="CASCADE",
            name="fk_tasktoolkit_operation_resources_operation",
        ),
        primary_key=True,
    )
    resource_type: Mapped[str] = mapped_column(exact_string(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(exact_string(64), primary_key=True)

    def __repr__(self) -> str:
        return _repr(self, "operation_id", "resource_type", "resource_id")


class TaskAttempt(RecordBase):
    """One start of a task that has ended: where it ran, when, and how it ended."""

    __tablename__ = "tasktoolkit_task_attempts"
    __table_args__ = (
        # The stats' run times: the attempts that ended in a window of finish times.
        Index("ix_tasktoolkit_task_attempts_finished", "finished_at"),
    )

    task_id: Mapped[str] = mapped_column(
        exact_string(36), ForeignKey("tasktoolkit_tasks.id", ondelete="CASCADE"), primary_key=True
    )
    #: 1 for the first start of the task, 2 for the next, ...
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    host: Mapped[str | None] = mapped_column(exact_string(255))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime]
    #: ``succeeded``, ``failed``, ``cancelled``, or ``handed_back`` (its worker
    #: stopped and gave it back; not a failed attempt).
    outcome: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_traceback: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return _repr(self, "task_id", "number", "outcome")


class ReaperWatch(RecordBase):
    """Since when the reapers have watched the database without a gap (one row per watch).

    Every pass of a reaper writes it (the database's times): a pass that finds
    the last one older than its allowance (the database was out of every
    reaper's sight meanwhile) starts the watch anew, and a worker is called
    lost only once the watch, like its silence, has lasted its heartbeat
    timeout (see :mod:`tasktoolkit.orm._reaper`).
    """

    __tablename__ = "tasktoolkit_reaper_watch"

    name: Mapped[str] = mapped_column(exact_string(64), primary_key=True)
    #: When the current watch began.
    since: Mapped[datetime]
    #: When a reaper last looked.
    seen_at: Mapped[datetime]

    def __repr__(self) -> str:
        return _repr(self, "name", "since", "seen_at")


class WorkerRecord(RecordBase):
    """A live worker, as it announced itself: one row per worker, beaten while it runs.

    Every time is the database's. A row whose ``beat_at`` is older than its
    ``timeout`` is not live (the worker died or lost the database); the reaper
    and purge delete such rows, and a worker that stops cleanly deletes its own
    (see :mod:`tasktoolkit.orm._registry`).
    """

    __tablename__ = "tasktoolkit_workers"

    #: The worker's identity (a database worker's ``host``, ``<hostname>:<pid>`` by default).
    id: Mapped[str] = mapped_column(exact_string(255), primary_key=True)
    #: The machine it runs on (its hostname).
    host: Mapped[str] = mapped_column(exact_string(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: ``database`` (claims from the database), ``celery`` (a Celery worker), ``reaper``.
    kind: Mapped[str] = mapped_column(String(16))
    #: The task names it runs, as a JSON list.
    names: Mapped[str] = mapped_column(Text)
    #: The queues it serves, as a JSON list (``null`` in it: the default queue).
    queues: Mapped[str] = mapped_column(Text)
    #: Seconds without a beat after which it is not live.
    timeout: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=db_now())
    beat_at: Mapped[datetime] = mapped_column(default=db_now())

    def __repr__(self) -> str:
        return _repr(self, "id", "kind", "beat_at")


#: The tables behind the records, typed as Core tables for statements.
operations_table = cast(Table, Operation.__table__)
tasks_table = cast(Table, Task.__table__)
idempotency_keys_table = cast(Table, IdempotencyKey.__table__)
attempts_table = cast(Table, TaskAttempt.__table__)
operation_resources_table = cast(Table, OperationResource.__table__)
reaper_watch_table = cast(Table, ReaperWatch.__table__)
workers_table = cast(Table, WorkerRecord.__table__)
