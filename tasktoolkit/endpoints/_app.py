"""The WSGI app behind every mounted route: it reads the route match and answers.

One :class:`TaskEndpoints` serves all the toolkit's routes of a host; the
route's ``action`` (published by Routes in ``wsgiorg.routing_args``) says
which endpoint was matched. It reads records only through
:mod:`tasktoolkit.orm._queries` and keeps nothing per request on itself.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from sqlalchemy import BigInteger, Integer, String, Uuid, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from webob import Request, Response

from tasktoolkit._checks import whole_number
from tasktoolkit._environ import ROUTING_ARGS_KEY
from tasktoolkit.caller import (
    OPERATIONS_CANCEL,
    OPERATIONS_LIST,
    OPERATIONS_SHOW,
    TASKS_CANCEL,
    TASKS_LIST,
    TASKS_SHOW,
    TASKS_SHOW_HOST,
    Authorize,
    Caller,
    CallerGetter,
    check_caller,
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
from tasktoolkit.endpoints._views import operation_view, task_view
from tasktoolkit.endpoints._waiting import parse_prefer
from tasktoolkit.errors import (
    DatabaseUnavailableError,
    ForbiddenError,
    NotFoundError,
    OperationNotFoundError,
    TaskNotFoundError,
    TaskToolkitError,
    database_unavailable,
)
from tasktoolkit.http_errors import error_response, response_for
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
    prepare_engine,
)
from tasktoolkit.orm._deadline import DEFAULT_DEADLINE, check_deadline, deadline, fresh_deadline
from tasktoolkit.orm._listening import Waiter, waiter_for
from tasktoolkit.orm._queries import Page
from tasktoolkit.orm._transitions import cancel_operation

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from tasktoolkit.pages import Pages

__all__ = ["ResourceVisibility", "TaskEndpoints", "canonical_resource_id", "resource_visible"]

_UUID_LENGTH = 36
#: Every project's records.
_EVERYONE = Scope(all_projects=True)


class ResourceVisibility(Protocol):
    """Whether a caller may see a resource (and so its tasks).

    :param session: a session to look the resource up with.
    :param model: the resource's model.
    :param resource_id: its primary key, as text (already of the key's type).
    :param caller: who asks.
    :param admin: whether the caller may see every project's records under the
        rule of the request (``tasktoolkit:tasks:list`` or ``...:show``).
    """

    def __call__(
        self,
        session: Session,
        model: type[TaskResource],
        resource_id: str,
        *,
        caller: Caller,
        admin: bool,
    ) -> bool: ...


def canonical_resource_id(model: type[TaskResource], raw: str) -> Any | None:
    """``raw`` (from a URL) as a value of ``model``'s primary key, or ``None`` if it cannot be one.

    Refusing here keeps malformed ids (letters for an integer key, NUL bytes,
    over-long text) away from the database, which would answer them with an error.
    """
    column = model.__mapper__.primary_key[0]
    kind = column.type
    if isinstance(kind, Integer):
        bits = 63 if isinstance(kind, BigInteger) else 31
        if not raw.isascii() or not raw.lstrip("-").isdigit() or len(raw) > 20:
            return None
        number = int(raw)
        return number if -(2**bits) <= number < 2**bits else None
    if isinstance(kind, Uuid):
        try:
            return uuid.UUID(raw) if len(raw) <= _UUID_LENGTH else None
        except ValueError:
            return None
    if not raw or not raw.isprintable():
        return None
    if isinstance(kind, String) and kind.length is not None and len(raw) > kind.length:
        return None
    return raw


def resource_visible(
    session: Session,
    model: type[TaskResource],
    resource_id: str,
    *,
    caller: Caller,
    admin: bool,
) -> bool:
    """The default visibility: the resource exists and is in the caller's project.

    Callers who may see every project's records (``admin``) see every resource.
    A model without a ``project_id`` attribute is visible to them only (pass your
    own hook to say otherwise).
    """
    key = canonical_resource_id(model, resource_id)
    if key is None:
        return False
    resource = session.get(model, key)
    # MariaDB's default collation finds 'abc' for 'ABC': ids compare exactly here.
    if resource is None or inspect(resource).identity != (key,):
        return False
    if admin:
        return True
    project_id = getattr(resource, "project_id", None)
    return caller.project_id is not None and project_id == caller.project_id


def _target(record: Task | Operation) -> dict[str, Any]:
    """What the authorization hook is told of a record."""
    return {
        "project_id": record.project_id,
        "user_id": record.user_id,
        "resource_type": record.resource_type,
        "resource_id": record.resource_id,
    }


@dataclass(frozen=True, slots=True)
class _Call:
    """One request being served (kept on the stack, never on the app)."""

    request: Request
    match: Mapping[str, Any]
    caller: Caller
    authorize: Authorize
    #: Answers with pages (the request prefers HTML), else ``None`` (JSON).
    pages: Pages | None = None

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


_Handler = Callable[["TaskEndpoints", Session, _Call], Response]
#: Reads a record: its response, and whether it is terminal (nothing more to wait for).
_Read = Callable[[Session], tuple[Response, bool]]


class TaskEndpoints:
    """The toolkit's endpoints as one WSGI app, dispatched on the route's ``action``.

    :param collections: URL collection name -> resource model (``{"ports": Port}``).
    :param session_factory: makes a session per request (a ``sessionmaker``).
    :param caller_getter: the caller from the environ.
    :param authorize: ``authorize(caller, rule, target)``, asked with the rules
        of :data:`tasktoolkit.caller.RULES`.
    :param visibility: whether a caller may see a resource; default
        :func:`resource_visible`.
    :param retry_after: seconds announced in ``Retry-After`` on a running operation.
    :param deadline: seconds a request's database work may take before it is
        answered ``503`` (a database that does not answer); ``None``: no limit.
        See :func:`tasktoolkit.orm.deadline`.
    :param openapi: the OpenAPI document to answer the ``openapi`` action with.
    :param max_wait: the longest ``Prefer: wait`` honoured, in seconds.
    :param pages: answer a request that prefers ``text/html`` with a page
        (:mod:`tasktoolkit.pages`), when the ``[pages]`` extra (Jinja2) is installed.
    :param path_prefix: where the endpoints are mounted (the pages' links start there).
    """

    def __init__(
        self,
        *,
        collections: Mapping[str, type[TaskResource]],
        session_factory: Callable[[], Session],
        caller_getter: CallerGetter,
        authorize: Authorize,
        visibility: ResourceVisibility | None = None,
        retry_after: int = 1,
        deadline: float | None = DEFAULT_DEADLINE,
        openapi: Mapping[str, Any] | None = None,
        max_wait: int = 30,
        pages: bool = True,
        path_prefix: str = "",
    ) -> None:
        if not callable(session_factory):
            raise TypeError("session_factory must make sessions (a sessionmaker)")
        bind = getattr(session_factory, "kw", {}).get("bind")
        if isinstance(bind, Engine):
            prepare_engine(bind)  # lets the deadline reach its connections
        whole_number(retry_after, "retry_after", minimum=0)
        whole_number(max_wait, "max_wait", minimum=0, maximum=3600)
        self.collections = dict(collections)
        self.session_factory = session_factory
        self.caller_getter = caller_getter
        if not callable(authorize):
            raise TypeError(f"authorize must be callable, got {authorize!r}")
        self.authorize = authorize
        self.visibility: ResourceVisibility = visibility or resource_visible
        self.retry_after = retry_after
        self.deadline = check_deadline(deadline)
        # Built once: the document of what is mounted does not change.
        self._openapi = None if openapi is None else json.dumps(openapi).encode()
        self.max_wait = max_wait
        # Made at the first wait, then shared by every request (like a pool).
        self._waiter: Waiter | None = None
        self._waiter_lock = threading.Lock()
        #: The pages, or ``None`` (not asked for, or Jinja2 is not installed).
        self.pages = _pages(self.collections, path_prefix, max_wait) if pages else None

    def close(self) -> None:
        """Stop listening for changes (PostgreSQL), if a wait ever started to."""
        with self._waiter_lock:
            if self._waiter is not None:
                self._waiter.close()
                self._waiter = None

    def _waiter_of(self, session: Session) -> Waiter:
        with self._waiter_lock:
            if self._waiter is None:
                bind = session.get_bind()
                self._waiter = waiter_for(bind if isinstance(bind, Engine) else bind.engine)
            return self._waiter

    def _answer(self, session: Session, call: _Call, record_id: str, read: _Read) -> Response:
        """The record's response, once ``Prefer: wait`` allows (see :mod:`._waiting`)."""
        wait = parse_prefer(call.request.headers.get("Prefer"), cap=self.max_wait)
        if wait is None:
            return read(session)[0]
        until = time.monotonic() + wait
        conditional = "If-None-Match" in call.request.headers
        with self._waiter_of(session).subscribe(record_id) as changes:
            reads = 0
            while True:
                # Each read after the first is bounded on its own, not by the
                # request's deadline, which a long wait outlives.
                with fresh_deadline(self.deadline) if reads else nullcontext():
                    response, terminal = read(session)
                    session.close()  # no transaction, no connection held while waiting
                reads += 1
                remaining = until - time.monotonic()
                if terminal or (conditional and response.status_int != 304) or remaining <= 0:
                    break
                changes.wait(remaining)
        response.headers["Preference-Applied"] = f"wait={wait}"
        return response

    # -- WSGI ---------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        response = self.respond(environ)
        return response(environ, start_response)  # type: ignore[no-any-return]

    def respond(self, environ: WSGIEnvironment) -> Response:
        """The response to one request routed here."""
        routing = environ.get(ROUTING_ARGS_KEY)
        match: Mapping[str, Any] = routing[1] if isinstance(routing, tuple) else {}
        action = match.get("action")
        entry = _ACTIONS.get(action) if isinstance(action, str) else None
        if entry is None:
            return error_response(environ, 404, "tasktoolkit.not_found", "no such endpoint")
        methods, handler = entry
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in methods:
            return error_response(
                environ,
                405,
                "tasktoolkit.method_not_allowed",
                f"{method} is not allowed here; use {', '.join(methods)}",
                headers=[("Allow", ", ".join(methods))],
            )
        pages = self._pages_for(environ, action)
        request = Request(environ if pages is None else pages.form_environ(environ))
        try:
            caller = check_caller(self.caller_getter(environ))
            call = _Call(request, match, caller, self.authorize, pages)
            with deadline(self.deadline), self.session_factory() as session:
                response = handler(self, session, call)
        except TaskToolkitError as error:
            response = response_for(environ, error)
        except Exception as error:  # the database's errors, SQLAlchemy's or oslo.db's
            if not database_unavailable(error):
                raise
            response = response_for(environ, DatabaseUnavailableError())
        if pages is not None and response.content_type != "text/html":
            return pages.error_response(response, request)
        if self.pages is not None and self.pages.has(action):
            response.vary = ("Accept",)  # the same URL answers a page to a browser
        return response

    def _pages_for(self, environ: WSGIEnvironment, action: object) -> Pages | None:
        """The pages when this request gets one (it prefers HTML, and the endpoint has a page)."""
        if self.pages is None or not self.pages.has(action):
            return None
        from tasktoolkit.pages import prefers_html

        return self.pages if prefers_html(environ.get("HTTP_ACCEPT")) else None

    # -- the resource's own endpoints ----------------------------------------

    def _resource(self, session: Session, call: _Call, rule: str) -> tuple[str, str]:
        """``(resource_type, resource_id)`` of the matched resource, if the caller may see it."""
        collection = call.match.get("collection")
        model = self.collections.get(collection) if isinstance(collection, str) else None
        raw = _path_text(call.match.get("resource_id"))
        key = None if model is None or raw is None else canonical_resource_id(model, raw)
        if model is None or key is None:
            what = collection if model is None else model.__resource_type__
            raise NotFoundError(f"no {what} {raw!r}")
        resource_id = str(key)
        admin = call.all_projects(rule)
        if not self.visibility(session, model, resource_id, caller=call.caller, admin=admin):
            raise NotFoundError(f"no {model.__resource_type__} {raw!r}")
        return model.__resource_type__, resource_id

    def resource_tasks(self, session: Session, call: _Call) -> Response:
        params, pairs = parse_list_query(call.request.query_string, RESOURCE_TASK_LIST)
        resource_type, resource_id = self._resource(session, call, TASKS_LIST)
        # The visibility hook has the say on a resource's tasks: it may show a
        # resource (a shared network) beyond the caller's project.
        page = list_tasks(
            session,
            replace(params, resource_type=resource_type, resource_id=resource_id),
            scope=_EVERYONE,
        )
        return _list(call, "tasks", page, pairs, hosts=call.hosts(call.scope(TASKS_LIST)))

    def _resource_task(self, session: Session, call: _Call) -> Task:
        """The matched task of the matched resource, if the caller may see the resource."""
        refuse_any(call.request.query_string)
        resource_type, resource_id = self._resource(session, call, TASKS_SHOW)
        return get_task(
            session,
            _task_id(call),
            scope=_EVERYONE,
            resource_type=resource_type,
            resource_id=resource_id,
        )

    def resource_task(self, session: Session, call: _Call) -> Response:
        def read(session: Session) -> tuple[Response, bool]:
            task = self._resource_task(session, call)
            hosts = call.allowed(TASKS_SHOW_HOST, _target(task))
            return _single(call, {"task": task_view(task, admin=hosts)}), task.is_terminal

        return self._answer(session, call, _task_id(call), read)

    def cancel(self, session: Session, call: _Call) -> Response:
        found = self._resource_task(session, call)
        target = _target(found)
        if not call.allowed(TASKS_CANCEL, target):
            raise ForbiddenError(f"not allowed to cancel task {found.id}")
        task = cancel_task(session, found.id)
        session.commit()
        hosts = call.allowed(TASKS_SHOW_HOST, target)
        return _json({"task": task_view(task, admin=hosts)}, status=202)

    # -- across resources ----------------------------------------------------

    def tasks(self, session: Session, call: _Call) -> Response:
        return _listing(session, call, TASK_LIST, TASKS_LIST, list_tasks, "tasks")

    def task(self, session: Session, call: _Call) -> Response:
        refuse_any(call.request.query_string)
        task_id = _task_id(call)

        def read(session: Session) -> tuple[Response, bool]:
            task = get_task(session, task_id, scope=_EVERYONE)
            target = _target(task)
            if not call.allowed(TASKS_SHOW, target):
                raise TaskNotFoundError(f"no task {task_id!r}")
            hosts = call.allowed(TASKS_SHOW_HOST, target)
            return _single(call, {"task": task_view(task, admin=hosts)}), task.is_terminal

        return self._answer(session, call, task_id, read)

    def operations(self, session: Session, call: _Call) -> Response:
        return _listing(
            session, call, OPERATION_LIST, OPERATIONS_LIST, list_operations, "operations"
        )

    def openapi(self, session: Session, call: _Call) -> Response:
        refuse_any(call.request.query_string)
        if self._openapi is None:
            raise NotFoundError("no such endpoint")
        return Response(
            status=200, body=self._openapi, content_type="application/json", charset=None
        )

    def _visible_operation(self, session: Session, call: _Call) -> tuple[Operation, dict[str, Any]]:
        """The matched operation and its target, if the caller may see it."""
        operation_id = _operation_id(call)
        operation = get_operation(session, operation_id, scope=_EVERYONE)
        target = _target(operation)
        if not call.allowed(OPERATIONS_SHOW, target):
            raise OperationNotFoundError(f"no operation {operation_id!r}")
        return operation, target

    def _operation_view(
        self, session: Session, call: _Call, operation: Operation, target: dict[str, Any]
    ) -> dict[str, Any]:
        tasks = operation_tasks(session, operation.id, scope=call.scope(TASKS_SHOW))
        hosts = call.allowed(TASKS_SHOW_HOST, target)
        return {"operation": operation_view(operation, admin=hosts, tasks=tasks)}

    def operation(self, session: Session, call: _Call) -> Response:
        refuse_any(call.request.query_string)

        def read(session: Session) -> tuple[Response, bool]:
            operation, target = self._visible_operation(session, call)
            response = _single(call, self._operation_view(session, call, operation, target))
            running = operation.state == OperationState.RUNNING
            if running:  # on a 304 too: pollers use both
                response.headers["Retry-After"] = str(self.retry_after)
            return response, not running

        return self._answer(session, call, _operation_id(call), read)

    def cancel_operation(self, session: Session, call: _Call) -> Response:
        refuse_any(call.request.query_string)
        found, target = self._visible_operation(session, call)
        if not call.allowed(OPERATIONS_CANCEL, target):
            raise ForbiddenError(f"not allowed to cancel operation {found.id}")
        cancel_operation(session, found.id)
        session.commit()
        session.refresh(found)  # its counts, as the cancels left them
        return _json(self._operation_view(session, call, found, target), status=202)


def _pages(
    collections: Mapping[str, type[TaskResource]], path_prefix: str, max_wait: int
) -> Pages | None:
    """The pages of these endpoints, or ``None`` when Jinja2 (the ``[pages]`` extra) is missing."""
    try:
        from tasktoolkit.pages import Pages
    except ModuleNotFoundError as missing:
        if missing.name != "jinja2":
            raise
        return None
    types = {model.__resource_type__: name for name, model in collections.items()}
    return Pages(collections=types, path_prefix=path_prefix, max_wait=max_wait)


_GET = ("GET", "HEAD")
_ACTIONS: dict[str, tuple[tuple[str, ...], _Handler]] = {
    "resource_tasks": (_GET, TaskEndpoints.resource_tasks),
    "resource_task": (_GET, TaskEndpoints.resource_task),
    "cancel": (("POST",), TaskEndpoints.cancel),
    "tasks": (_GET, TaskEndpoints.tasks),
    "task": (_GET, TaskEndpoints.task),
    "operations": (_GET, TaskEndpoints.operations),
    "operation": (_GET, TaskEndpoints.operation),
    "openapi": (_GET, TaskEndpoints.openapi),
    "cancel_operation": (("POST",), TaskEndpoints.cancel_operation),
}


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


def _operation_id(call: _Call) -> str:
    operation_id = _path_text(call.match.get("operation_id"))
    if operation_id is None or not is_valid_request_id(operation_id):
        raise NotFoundError(f"no operation {operation_id!r}")
    return operation_id


def _task_id(call: _Call) -> str:
    task_id = _path_text(call.match.get("task_id"))
    if task_id is None or len(task_id) != _UUID_LENGTH:
        raise TaskNotFoundError(f"no task {task_id!r}")
    try:
        canonical = str(uuid.UUID(task_id))
    except ValueError:
        raise TaskNotFoundError(f"no task {task_id!r}") from None
    if canonical != task_id:
        raise TaskNotFoundError(f"no task {task_id!r}")
    return task_id


def _json(document: Mapping[str, Any], *, status: int = 200) -> Response:
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return Response(status=status, body=body, content_type="application/json", charset=None)


def _listing(
    session: Session,
    call: _Call,
    kind: ListKind,
    rule: str,
    lister: Callable[..., Page[Task] | Page[Operation]],
    key: str,
) -> Response:
    """``GET /tasks`` or ``GET /operations``: the page of what ``rule`` lets the caller see."""
    params, pairs = parse_list_query(call.request.query_string, kind)
    scope = call.scope(rule)
    return _list(call, key, lister(session, params, scope=scope), pairs, hosts=call.hosts(scope))


def _list(
    call: _Call,
    key: str,
    page: Page[Task] | Page[Operation],
    pairs: list[tuple[str, str]],
    *,
    hosts: bool,
) -> Response:
    """A page of tasks or operations as ``{key: [...], key_links: [...]}``.

    :param hosts: whether the views show hosts and tracebacks.
    """
    views = [
        task_view(r, admin=hosts) if isinstance(r, Task) else operation_view(r, admin=hosts)
        for r in page.records
    ]
    links: list[dict[str, str]] = []
    if page.has_more and views:
        kept = [(name, value) for name, value in pairs if name != "marker"]
        query = urlencode([*kept, ("marker", views[-1]["id"])])
        links.append({"rel": "next", "href": f"{call.request.path_url}?{query}"})
    document = {key: views, f"{key}_links": links}
    if call.pages is not None:
        return call.pages.response(call.match["action"], document, call.request)
    return _json(document)


def _single(call: _Call, document: Mapping[str, Any]) -> Response:
    """A single record with its ``ETag``; ``304`` when ``If-None-Match`` holds it."""
    response = _json(document)
    etag = hashlib.sha256(response.body).hexdigest()[:32]
    if call.pages is not None:  # the page's script waits on the JSON with this ETag
        return call.pages.response(call.match["action"], document, call.request, etag=f'"{etag}"')
    response.headers["ETag"] = f'"{etag}"'
    if _matches(call.request.headers.get("If-None-Match"), etag):
        not_modified = Response(status=304, charset=None)
        not_modified.headers["ETag"] = f'"{etag}"'
        not_modified.headers.pop("Content-Type", None)
        return not_modified
    return response


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.strip('"') == etag:
            return True
    return False
