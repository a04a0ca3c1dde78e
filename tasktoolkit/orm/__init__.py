"""The ORM part: records, the resource mixin, states, workers, lifespan and queries.

What a host app and a worker use, and nothing else; the modules behind it are
private. The ORM knows nothing of HTTP.

Example::

    from tasktoolkit.orm import TaskResource, Worker

    class Port(TaskResource, Base):
        __tablename__ = "ports"
        __resource_type__ = "port"
        id: Mapped[str] = mapped_column(String(36), primary_key=True)

    port.spawn_tasks(["l2_wiring", "dhcp_provisioning"])      # in the API
    job = Worker(engine, ["l2_wiring"]).claim()                # in a worker
"""

from __future__ import annotations

from tasktoolkit.orm._deadline import deadline
from tasktoolkit.orm._engine import create_all, drop_all, prepare_engine
from tasktoolkit.orm._lifespan import PurgeResult, purge
from tasktoolkit.orm._queries import (
    ListParams,
    Scope,
    get_operation,
    get_task,
    list_operations,
    list_tasks,
    operation_tasks,
)
from tasktoolkit.orm._reaper import ReapResult, reap
from tasktoolkit.orm._records import NAMING_CONVENTION, Operation, Task, metadata
from tasktoolkit.orm._resource import ResourceStatus, TaskResource, spawn_tasks
from tasktoolkit.orm._rules import TaskRules
from tasktoolkit.orm._states import ACTIVE_TASK_STATES, OperationState, TaskState
from tasktoolkit.orm._transitions import cancel_task
from tasktoolkit.orm._types import UTCDateTime
from tasktoolkit.orm._workers import Job, Worker

__all__ = [
    "ACTIVE_TASK_STATES",
    "NAMING_CONVENTION",
    "Job",
    "ListParams",
    "Operation",
    "OperationState",
    "PurgeResult",
    "ReapResult",
    "ResourceStatus",
    "Scope",
    "Task",
    "TaskResource",
    "TaskRules",
    "TaskState",
    "UTCDateTime",
    "Worker",
    "cancel_task",
    "create_all",
    "deadline",
    "drop_all",
    "get_operation",
    "get_task",
    "list_operations",
    "list_tasks",
    "metadata",
    "operation_tasks",
    "prepare_engine",
    "purge",
    "reap",
    "spawn_tasks",
]
