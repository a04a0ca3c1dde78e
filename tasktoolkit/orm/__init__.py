"""The ORM part: records, the resource mixin, states and transitions.

Example::

    from tasktoolkit.orm import TaskResource, start_task, succeed_task

    class Port(TaskResource, Base):
        __tablename__ = "ports"
        __resource_type__ = "port"
        id: Mapped[str] = mapped_column(String(36), primary_key=True)

    port.spawn_tasks(["l2_wiring", "dhcp_provisioning"])
"""

from __future__ import annotations

from tasktoolkit.orm import _events as _events
from tasktoolkit.orm._types import UTCDateTime, utcnow
from tasktoolkit.orm.engine import create_all, drop_all, host_metadatas, prepare_engine
from tasktoolkit.orm.expiry import DEFAULT_TTL, ExpiryPolicy, check_ttl
from tasktoolkit.orm.lifespan import (
    WORKER_LOST,
    PurgeResult,
    ReapResult,
    count_expired,
    parse_duration,
    purge,
    reap,
    reap_lost_tasks,
)
from tasktoolkit.orm.operations import (
    OperationFields,
    count_task_transition,
    end_request,
    open_operation,
    settle_orphaned_operations,
)
from tasktoolkit.orm.queries import (
    ALL_PROJECTS,
    ListParams,
    Page,
    Scope,
    get_operation,
    get_task,
    list_operations,
    list_tasks,
    operation_tasks,
)
from tasktoolkit.orm.records import NAMING_CONVENTION, Operation, RecordBase, Task, metadata
from tasktoolkit.orm.resource import (
    ResourceStatus,
    TaskResource,
    expiry_policy_for,
    resource_class,
    resource_types,
    spawn_tasks,
)
from tasktoolkit.orm.states import (
    ACTIVE_TASK_STATES,
    TERMINAL_TASK_STATES,
    OperationState,
    TaskState,
    can_transition,
    parse_operation_state,
    parse_task_state,
)
from tasktoolkit.orm.transitions import (
    cancel_task,
    check_progress,
    fail_task,
    mark_cancelled,
    set_progress,
    start_task,
    succeed_task,
    transition,
)
from tasktoolkit.orm.workers import (
    Job,
    Worker,
    acknowledge_cancel,
    cancel_requested,
    claim_task,
    default_host,
    fail_held_task,
    heartbeat,
    report_progress,
    succeed_held_task,
)

__all__ = [
    "ACTIVE_TASK_STATES",
    "ALL_PROJECTS",
    "DEFAULT_TTL",
    "NAMING_CONVENTION",
    "TERMINAL_TASK_STATES",
    "WORKER_LOST",
    "ExpiryPolicy",
    "Job",
    "ListParams",
    "Operation",
    "OperationFields",
    "OperationState",
    "Page",
    "PurgeResult",
    "ReapResult",
    "RecordBase",
    "ResourceStatus",
    "Scope",
    "Task",
    "TaskResource",
    "TaskState",
    "UTCDateTime",
    "Worker",
    "acknowledge_cancel",
    "can_transition",
    "cancel_requested",
    "cancel_task",
    "check_progress",
    "check_ttl",
    "claim_task",
    "count_expired",
    "count_task_transition",
    "create_all",
    "default_host",
    "drop_all",
    "end_request",
    "expiry_policy_for",
    "fail_held_task",
    "fail_task",
    "get_operation",
    "get_task",
    "heartbeat",
    "host_metadatas",
    "list_operations",
    "list_tasks",
    "mark_cancelled",
    "metadata",
    "open_operation",
    "operation_tasks",
    "parse_duration",
    "parse_operation_state",
    "parse_task_state",
    "prepare_engine",
    "purge",
    "reap",
    "reap_lost_tasks",
    "report_progress",
    "resource_class",
    "resource_types",
    "set_progress",
    "settle_orphaned_operations",
    "spawn_tasks",
    "start_task",
    "succeed_held_task",
    "succeed_task",
    "transition",
    "utcnow",
]
