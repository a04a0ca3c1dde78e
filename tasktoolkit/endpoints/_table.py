"""The endpoint table: each endpoint declared once.

An :class:`Endpoint` says where it is (its path), which methods it takes,
which handler answers it, which policy rules it asks, and what the OpenAPI
document says of it, as werkzeug's ``Rule(path, endpoint=..., methods=...)``
does. Everything else is made from :data:`ENDPOINTS`:

- the Routes connections (:func:`tasktoolkit.endpoints.mount`);
- the dispatch, and the ``405`` with its ``Allow`` (:class:`~tasktoolkit.endpoints.TaskEndpoints`);
- the document's paths (:func:`tasktoolkit.endpoints.openapi_document`);
- the oslo.policy defaults, each rule with the requests it guards
  (:func:`tasktoolkit.oslo.list_rules`; the rules themselves, with who passes
  them, are declared in :mod:`tasktoolkit.caller`).

A path under :data:`RESOURCE_PREFIX` exists once per mounted collection.

Example::

    for endpoint in ENDPOINTS:
        print(", ".join(endpoint.methods), endpoint.path, endpoint.rules[0])
"""

from __future__ import annotations

from dataclasses import dataclass

from tasktoolkit import caller as rules
from tasktoolkit.caller import Rule
from tasktoolkit.endpoints import _handlers as handlers
from tasktoolkit.endpoints._described import Described, accepted, forbidding, listing, record

__all__ = ["ENDPOINTS", "OPENAPI_PATH", "RESOURCE_PREFIX", "Endpoint"]

#: How the paths of a resource's endpoints start (``collection``: a mounted name).
RESOURCE_PREFIX = "/{collection}/{resource_id}"

#: Where the document of what is mounted is served, under the path prefix.
OPENAPI_PATH = "/openapi.json"
_GET = ("GET", "HEAD")
_LIST = (
    "state",
    "name",
    "request_id",
    "changes-since",
    "changes-before",
    "limit",
    "marker",
    "If-None-Match",
)
_SORT = ("sort_key", "sort_dir")
_WAIT = ("If-None-Match", "Prefer")
_KEY = ("Idempotency-Key",)
#: Who asked, and how it failed: filters of /tasks and /operations.
_CALLER = ("global_request_id", "user_id", "error_code")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint: its path, methods, handler, the rules it asks, and its description.

    :param name: the route's ``action`` (what dispatch reads) and the last part
        of its route name (``tasktoolkit.task``, ``tasktoolkit.ports.task``).
    :param path: its path under the prefix; under :data:`RESOURCE_PREFIX`, once
        per mounted collection.
    :param rules: the rules it asks the authorization hook, its own first.
    :param described: what the OpenAPI document says of it; ``None``: not in the
        document (the document itself).
    """

    name: str
    path: str
    methods: tuple[str, ...]
    handler: handlers.Handler
    rules: tuple[Rule, ...]
    described: Described | None

    @property
    def of_resource(self) -> bool:
        """Whether it exists once per mounted collection."""
        return self.path.startswith(RESOURCE_PREFIX)

    def path_of(self, collection: str) -> str:
        """Its path for one mounted collection (``/ports/{resource_id}/tasks``)."""
        return f"/{collection}{self.path[len('/{collection}') :]}"


#: Every endpoint of the toolkit.
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "resource_tasks",
        f"{RESOURCE_PREFIX}/tasks",
        _GET,
        handlers.resource_tasks,
        (rules.TASKS_LIST, rules.TASKS_SHOW_HOST),
        Described(
            "listResourceTasks",
            "A resource's tasks",
            listing("TaskList", of_resource=True),
            (*_LIST, *_SORT),
        ),
    ),
    Endpoint(
        "resource_task",
        f"{RESOURCE_PREFIX}/tasks/{{task_id}}",
        _GET,
        handlers.resource_task,
        (rules.TASKS_SHOW, rules.TASKS_SHOW_HOST),
        Described("showResourceTask", "One task of a resource", record("TaskDocument"), _WAIT),
    ),
    Endpoint(
        "cancel",
        f"{RESOURCE_PREFIX}/tasks/{{task_id}}/cancel",
        ("POST",),
        handlers.cancel_resource_task,
        (rules.TASKS_CANCEL, rules.TASKS_SHOW, rules.TASKS_SHOW_HOST),
        Described(
            "cancelResourceTask",
            "Cancel a task: a pending one at once, a running one is asked to stop",
            accepted("TaskDocument"),
            _KEY,
        ),
    ),
    Endpoint(
        "retry",
        f"{RESOURCE_PREFIX}/tasks/{{task_id}}/retry",
        ("POST",),
        handlers.retry_resource_task,
        (rules.TASKS_RETRY, rules.TASKS_SHOW, rules.TASKS_SHOW_HOST),
        Described(
            "retryResourceTask",
            "Re-run a failed or cancelled task, as the request's own operation",
            accepted("TaskDocument", "Accepted: the task, pending again"),
            _KEY,
        ),
    ),
    Endpoint(
        "tasks",
        "/tasks",
        _GET,
        handlers.tasks,
        (rules.TASKS_LIST, rules.TASKS_SHOW_HOST),
        Described(
            "listTasks",
            "Every task the caller may see",
            listing("TaskList"),
            (*_LIST, *_SORT, "resource_type", "resource_id", *_CALLER, "queue"),
        ),
    ),
    # Before /tasks/{task_id}, which would take "stats" for an id.
    Endpoint(
        "stats",
        "/tasks/stats",
        _GET,
        handlers.stats,
        (rules.TASKS_LIST,),
        Described(
            "showTaskStats",
            "Per task name and queue: pending, running, the oldest pending, the last hour's "
            "failures by error code and run times",
            listing("TaskStatsList"),
        ),
    ),
    Endpoint(
        "task",
        "/tasks/{task_id}",
        _GET,
        handlers.task,
        (rules.TASKS_SHOW, rules.TASKS_SHOW_HOST),
        Described("showTask", "One task", record("TaskDocument"), _WAIT),
    ),
    Endpoint(
        "retry_task",
        "/tasks/{task_id}/retry",
        ("POST",),
        handlers.retry_task,
        (rules.TASKS_RETRY, rules.TASKS_SHOW, rules.TASKS_SHOW_HOST),
        Described(
            "retryTask",
            "Re-run a failed or cancelled task, as the request's own operation",
            accepted("TaskDocument", "Accepted: the task, pending again"),
            _KEY,
        ),
    ),
    Endpoint(
        "operations",
        "/operations",
        _GET,
        handlers.operations,
        (rules.OPERATIONS_LIST, rules.TASKS_SHOW_HOST),
        Described(
            "listOperations",
            "Operations the caller may see",
            listing("OperationList"),
            (
                "operation_state",
                "request_id",
                "operation_resource_type",
                "action",
                "method",
                "resource_id",
                *_CALLER,
                "changes-since",
                "changes-before",
                "limit",
                "operation_marker",
                "operation_sort_key",
                "sort_dir",
                "If-None-Match",
            ),
        ),
    ),
    Endpoint(
        "operation",
        "/operations/{operation_id}",
        _GET,
        handlers.operation,
        (rules.OPERATIONS_SHOW, rules.TASKS_SHOW, rules.TASKS_SHOW_HOST),
        Described(
            "showOperation",
            "One operation with its tasks",
            record("OperationDocument", retry_after=True),
            _WAIT,
        ),
    ),
    Endpoint(
        "cancel_operation",
        "/operations/{operation_id}/cancel",
        ("POST",),
        handlers.cancel_operation,
        (rules.OPERATIONS_CANCEL, rules.OPERATIONS_SHOW, rules.TASKS_SHOW, rules.TASKS_SHOW_HOST),
        Described(
            "cancelOperation",
            "Cancel every active task of a running operation: pending ones at once, running "
            "ones are asked to stop",
            accepted(
                "OperationDocument",
                "Accepted: the operation with its tasks, as the cancel left them",
            ),
            _KEY,
        ),
    ),
    Endpoint(
        "workers",
        "/workers",
        _GET,
        handlers.workers,
        (rules.WORKERS_LIST,),
        Described(
            "listWorkers",
            "The workers and when each last beat (admins and system readers)",
            forbidding(listing("WorkerList")),
        ),
    ),
    Endpoint(
        "retry_operation",
        "/operations/{operation_id}/retry",
        ("POST",),
        handlers.retry_operation,
        (rules.OPERATIONS_RETRY, rules.OPERATIONS_SHOW, rules.TASKS_SHOW, rules.TASKS_SHOW_HOST),
        Described(
            "retryOperation",
            "Re-run every failed or cancelled task of an operation, as the request's own "
            "operation (its retry_of names the one re-run)",
            accepted(
                "OperationDocument",
                "Accepted: the re-run, with its tasks",
            ),
            _KEY,
        ),
    ),
    Endpoint("openapi", OPENAPI_PATH, _GET, handlers.openapi, (), None),
)
