"""The endpoints' handlers: each reads records through :mod:`tasktoolkit.orm` and answers data.

A handler takes the :class:`Call` of one request and returns an
:class:`~tasktoolkit.endpoints._represent.Answer` (or a
:class:`~tasktoolkit.endpoints._represent.Waiting` for a record a client may
wait on); it raises a :class:`~tasktoolkit.errors.TaskToolkitError` for the
contract's 4xx. Which handler serves which path, under which rule, is the
endpoint table's to say (:mod:`tasktoolkit.endpoints._table`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.orm import Session
from webob import Request

from tasktoolkit import context
from tasktoolkit.caller import (
    OPERATIONS_CANCEL,
    OPERATIONS_LIST,
    OPERATIONS_RETRY,
    OPERATIONS_SHOW,
    TASKS_CANCEL,
    TASKS_LIST,
    TASKS_RETRY,
    TASKS_SHOW,
    TASKS_SHOW_HOST,
    WORKERS_LIST,
    Authorize,
    Caller,
    Rule,
)
from tasktoolkit.context import is_valid_request_id
from tasktoolkit.endpoints._params import (
    OPERATION_LIST,
    RESOURCE_TASK_LIST,
    TASK_LIST,
    ListKind,
    parse_list_query,
    refuse_any,
)
from tasktoolkit.endpoints._represent import Answer, Waiting
from tasktoolkit.endpoints._visibility import (
    UUID_LENGTH,
    ResourceVisibility,
    canonical_resource_id,
)
from tasktoolkit.errors import (
    ForbiddenError,
    NotFoundError,
    OperationNotFoundError,
    TaskNotFoundError,
)
from tasktoolkit.orm import (
    Operation,
    OperationState,
    Scope,
    Task,
    TaskResource,
    cancel_task,
    get_operation,
    get_task,
    list_operations,
    list_tasks,
    operation_tasks,
)
from tasktoolkit.orm._queries import Page
from tasktoolkit.orm._registry import Waits, list_workers, waits_of
from tasktoolkit.orm._stats import task_stats
from tasktoolkit.orm._transitions import cancel_operation as cancel_operations_tasks
from tasktoolkit.orm._transitions import rerun_operation, rerun_task
from tasktoolkit.views import operation_view, stats_view, task_view, worker_view

__all__ = [
    "Call",
    "Handler",
    "Mounted",
    "cancel_operation",
    "cancel_resource_task",
    "openapi",
    "operation",
    "operations",
    "resource_task",
    "resource_tasks",
    "retry_operation",
    "retry_resource_task",
    "retry_task",
    "stats",
    "task",
    "tasks",
    "workers",
]

#: Every project's records.
_EVERYONE = Scope(all_projects=True)


@dataclass(frozen=True, slots=True)
class Mounted:
    """What the handlers need of the mounted endpoints (made once, shared by every request).

    :param retry_after: the ``Retry-After`` of a running operation, in seconds.
    :param openapi: the document served at ``openapi.json``, if it is.
    """

    collections: Mapping[str, type[TaskResource]]
    visibility: ResourceVisibility
    retry_after: str
    openapi: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Call:
    """One request being served (kept on the stack, never on the app)."""

    mounted: Mounted
    session: Session
    request: Request
    match: Mapping[str, Any]
    caller: Caller
    authorize: Authorize

    def allowed(self, rule: str, target: Mapping[str, Any]) -> bool:
        return bool(self.authorize(self.caller, rule, target))

    def all_projects(self, rule: str) -> bool:
        """Whether ``rule`` holds on every project (a target whose ``project_id`` is ``None``)."""
        return self.allowed(rule, {"project_id": None})

    def scope(self, rule: str) -> Scope:
        """Whose records a list under ``rule`` shows: every project's, the caller's, or none."""
        if self.all_projects(rule):
            return _EVERYONE
        own = self.caller.project_id
        if own is not None and self.allowed(rule, {"project_id": own}):
            return Scope(project_id=own)
        return Scope(project_id=None)

    def hosts(self, scope: Scope) -> bool:
        """Whether the records of a list in ``scope`` show hosts and tracebacks."""
        project_id = None if scope.all_projects else scope.project_id
        return self.allowed(TASKS_SHOW_HOST, {"project_id": project_id})


#: A handler: the call of one request -> its answer (or the read a wait repeats).
Handler = Callable[[Call], Answer | Waiting]


def _target(record: Task | Operation) -> dict[str, Any]:
    """What the authorization hook is told of a record."""
    return {
        "project_id": record.project_id,
        "user_id": record.user_id,
        "resource_type": record.resource_type,
        "resource_id": record.resource_id,
    }


# -- a resource's own tasks ------------------------------------------------------


def _resource(call: Call, rule: str) -> tuple[str, str]:
    """``(resource_type, resource_id)`` of the matched resource, if the caller may see it."""
    collection = call.match.get("collection")
    collections = call.mounted.collections
    model = collections.get(collection) if isinstance(collection, str) else None
    raw = _path_text(call.match.get("resource_id"))
    key = None if model is None or raw is None else canonical_resource_id(model, raw)
    if model is None or key is None:
        what = collection if model is None else model.__resource_type__
        raise NotFoundError(f"no {what} {raw!r}")
    resource_id = str(key)
    scope = call.scope(rule)
    # A caller who may read nothing under ``rule`` (no role) sees no resource's tasks.
    visible = (scope.all_projects or scope.project_id is not None) and call.mounted.visibility(
        call.session, model, resource_id, caller=call.caller, admin=scope.all_projects
    )
    if not visible:
        raise NotFoundError(f"no {model.__resource_type__} {raw!r}")
    return model.__resource_type__, resource_id


def resource_tasks(call: Call) -> Answer:
    """``GET /<collection>/<id>/tasks``."""
    params, pairs = parse_list_query(call.request.query_string, RESOURCE_TASK_LIST)
    resource_type, resource_id = _resource(call, TASKS_LIST)
    # The visibility hook has the say on a resource's tasks: it may show a
    # resource (a shared network) beyond the caller's project.
    page = list_tasks(
        call.session,
        replace(params, resource_type=resource_type, resource_id=resource_id),
        scope=_EVERYONE,
    )
    return _list(call, "tasks", page, pairs, hosts=call.hosts(call.scope(TASKS_LIST)))


def _resource_task(call: Call) -> Task:
    """The matched task of the matched resource, if the caller may see the resource."""
    refuse_any(call.request.query_string)
    resource_type, resource_id = _resource(call, TASKS_SHOW)
    return get_task(
        call.session,
        _task_id(call),
        scope=_EVERYONE,
        resource_type=resource_type,
        resource_id=resource_id,
    )


def resource_task(call: Call) -> Waiting:
    """``GET /<collection>/<id>/tasks/<task_id>``."""

    def read() -> tuple[Answer, bool]:
        task = _resource_task(call)
        return _task_answer(call, task, _target(task)), task.is_terminal

    return Waiting(_task_id(call), read)


def cancel_resource_task(call: Call) -> Answer:
    """``POST /<collection>/<id>/tasks/<task_id>/cancel``."""
    return _moved(call, _resource_task(call), TASKS_CANCEL, "cancel", cancel_task)


def retry_resource_task(call: Call) -> Answer:
    """``POST /<collection>/<id>/tasks/<task_id>/retry``."""
    return _retry(call, _resource_task(call))


def _retry(call: Call, found: Task) -> Answer:
    """Re-run ``found`` in the request's operation: 202 with the task as it is now pending."""
    return _moved(call, found, TASKS_RETRY, "re-run", rerun_task)


def _moved(
    call: Call, found: Task, rule: Rule, verb: str, move: Callable[[Session, str], Task]
) -> Answer:
    """``move`` ``found`` if the caller may (``rule``), committed: 202 with the task as the
    move left it."""
    target = _target(found)
    if not call.allowed(rule, target):
        raise ForbiddenError(f"not allowed to {verb} task {found.id}")
    task = move(call.session, found.id)
    call.session.commit()
    hosts = call.allowed(TASKS_SHOW_HOST, target)
    return Answer({"task": task_view(task, admin=hosts, waits=_waits(call, [task]))}, status=202)


# -- across resources --------------------------------------------------------------


def tasks(call: Call) -> Answer:
    """``GET /tasks``."""
    return _listing(call, TASK_LIST, TASKS_LIST, list_tasks, "tasks")


def stats(call: Call) -> Answer:
    """``GET /tasks/stats``: per task name and queue, of the tasks the caller may list."""
    refuse_any(call.request.query_string)
    found = task_stats(call.session.connection(), scope=call.scope(TASKS_LIST))
    return Answer({"stats": [stats_view(s) for s in found]})


def task(call: Call) -> Waiting:
    """``GET /tasks/<task_id>``."""
    refuse_any(call.request.query_string)
    task_id = _task_id(call)

    def read() -> tuple[Answer, bool]:
        found = get_task(call.session, task_id, scope=_EVERYONE)
        target = _target(found)
        if not call.allowed(TASKS_SHOW, target):
            raise TaskNotFoundError(f"no task {task_id!r}")
        return _task_answer(call, found, target), found.is_terminal

    return Waiting(task_id, read)


def retry_task(call: Call) -> Answer:
    """``POST /tasks/<task_id>/retry``."""
    refuse_any(call.request.query_string)
    task_id = _task_id(call)
    found = get_task(call.session, task_id, scope=_EVERYONE)
    if not call.allowed(TASKS_SHOW, _target(found)):
        raise TaskNotFoundError(f"no task {task_id!r}")
    return _retry(call, found)


def _task_answer(call: Call, task: Task, target: Mapping[str, Any]) -> Answer:
    hosts = call.allowed(TASKS_SHOW_HOST, target)
    return Answer({"task": task_view(task, admin=hosts, waits=_waits(call, [task]))}, tagged=True)


def operations(call: Call) -> Answer:
    """``GET /operations``."""
    return _listing(call, OPERATION_LIST, OPERATIONS_LIST, list_operations, "operations")


def _visible_operation(call: Call) -> tuple[Operation, dict[str, Any]]:
    """The matched operation and its target, if the caller may see it."""
    operation_id = _operation_id(call)
    found = get_operation(call.session, operation_id, scope=_EVERYONE)
    target = _target(found)
    if not call.allowed(OPERATIONS_SHOW, target):
        raise OperationNotFoundError(f"no operation {operation_id!r}")
    return found, target


def _operation_document(call: Call, found: Operation, target: Mapping[str, Any]) -> dict[str, Any]:
    found_tasks = operation_tasks(call.session, found.id, scope=call.scope(TASKS_SHOW))
    hosts = call.allowed(TASKS_SHOW_HOST, target)
    waits = _waits(call, found_tasks)
    return {"operation": operation_view(found, admin=hosts, tasks=found_tasks, waits=waits)}


def operation(call: Call) -> Waiting:
    """``GET /operations/<request_id>``: ``Retry-After`` while it runs (on a 304 too)."""
    refuse_any(call.request.query_string)

    def read() -> tuple[Answer, bool]:
        found, target = _visible_operation(call)
        running = found.state == OperationState.RUNNING
        headers = (("Retry-After", call.mounted.retry_after),) if running else ()
        document = _operation_document(call, found, target)
        return Answer(document, headers=headers, tagged=True), not running

    return Waiting(_operation_id(call), read)


def cancel_operation(call: Call) -> Answer:
    """``POST /operations/<request_id>/cancel``."""
    refuse_any(call.request.query_string)
    found, target = _visible_operation(call)
    if not call.allowed(OPERATIONS_CANCEL, target):
        raise ForbiddenError(f"not allowed to cancel operation {found.id}")
    cancel_operations_tasks(call.session, found.id)
    call.session.commit()
    call.session.refresh(found)  # its counts, as the cancels left them
    return Answer(_operation_document(call, found, target), status=202)


def _waits(call: Call, tasks: list[Task]) -> Waits | None:
    """What says why the pending ones among ``tasks`` wait: read once, and only when one is."""
    return waits_of(call.session, tasks)


def workers(call: Call) -> Answer:
    """``GET /workers``: every worker's row (for admins and system readers)."""
    refuse_any(call.request.query_string)
    if not call.all_projects(WORKERS_LIST):
        raise ForbiddenError("listing workers is for admins and system readers")
    found = list_workers(call.session.connection())
    return Answer({"workers": [worker_view(w) for w in found]})


def retry_operation(call: Call) -> Answer:
    """``POST /operations/<request_id>/retry``: 202 with the re-run, the request's own
    operation (as ``Operation-Location`` says); outside a request's operation (no
    middleware), with the operation whose tasks were re-run."""
    refuse_any(call.request.query_string)
    found, target = _visible_operation(call)
    if not call.allowed(OPERATIONS_RETRY, target):
        raise ForbiddenError(f"not allowed to re-run operation {found.id}")
    rerun_operation(call.session, found.id)
    call.session.commit()
    ctx = context.current()
    if ctx is not None and ctx.operation_id is not None:
        try:
            found = get_operation(call.session, ctx.operation_id, scope=_EVERYONE)
        except OperationNotFoundError:
            pass
    call.session.refresh(found)
    return Answer(_operation_document(call, found, _target(found)), status=202)


def openapi(call: Call) -> Answer:
    """``GET <path_prefix>/openapi.json``: the document of what is mounted."""
    refuse_any(call.request.query_string)
    if call.mounted.openapi is None:
        raise NotFoundError("no such endpoint")
    return Answer(call.mounted.openapi)


# -- path variables and lists ----------------------------------------------------------


def _path_text(value: object) -> str | None:
    """A path variable as text: WSGI gives latin-1 text of UTF-8 bytes."""
    if not isinstance(value, str):
        return None
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        return value  # the server already decoded it
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _operation_id(call: Call) -> str:
    operation_id = _path_text(call.match.get("operation_id"))
    if operation_id is None or not is_valid_request_id(operation_id):
        raise NotFoundError(f"no operation {operation_id!r}")
    return operation_id


def _task_id(call: Call) -> str:
    task_id = _path_text(call.match.get("task_id"))
    if task_id is None or len(task_id) != UUID_LENGTH:
        raise TaskNotFoundError(f"no task {task_id!r}")
    try:
        canonical = str(uuid.UUID(task_id))
    except ValueError:
        raise TaskNotFoundError(f"no task {task_id!r}") from None
    if canonical != task_id:
        raise TaskNotFoundError(f"no task {task_id!r}")
    return task_id


def _listing(
    call: Call,
    kind: ListKind,
    rule: str,
    lister: Callable[..., Page[Task] | Page[Operation]],
    key: str,
) -> Answer:
    """``GET /tasks`` or ``GET /operations``: the page of what ``rule`` lets the caller see."""
    params, pairs = parse_list_query(call.request.query_string, kind)
    scope = call.scope(rule)
    page = lister(call.session, params, scope=scope)
    return _list(call, key, page, pairs, hosts=call.hosts(scope))


def _list(
    call: Call,
    key: str,
    page: Page[Task] | Page[Operation],
    pairs: list[tuple[str, str]],
    *,
    hosts: bool,
) -> Answer:
    """A page of tasks or operations as ``{key: [...], key_links: [...]}``.

    :param hosts: whether the views show hosts and tracebacks.
    """
    waits = _waits(call, [r for r in page.records if isinstance(r, Task)])
    views = [
        task_view(r, admin=hosts, waits=waits)
        if isinstance(r, Task)
        else operation_view(r, admin=hosts)
        for r in page.records
    ]
    links: list[dict[str, str]] = []
    if page.has_more and views:
        kept = [(name, value) for name, value in pairs if name != "marker"]
        query = urlencode([*kept, ("marker", views[-1]["id"])])
        links.append({"rel": "next", "href": f"{call.request.path_url}?{query}"})
    # A weak tag of what the page shows: a list changes under a client as its
    # records do, and If-None-Match spares it the page it already has.
    return Answer({key: views, f"{key}_links": links}, tagged=True, weak=True)
