"""Mounting the endpoints on a host's Routes mapper, and a small dispatcher.

Each connected route's ``controller`` is a WSGI app (a :class:`TaskEndpoints`),
as OpenStack's ``Router`` expects: it calls ``match["controller"]`` with the
environ that ``RoutesMiddleware`` filled with ``wsgiorg.routing_args``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from routes.middleware import RoutesMiddleware
from sqlalchemy.orm import Session

from tasktoolkit._environ import ROUTING_ARGS_KEY
from tasktoolkit.caller import Authorize, CallerGetter, default_authorize, keystone_caller
from tasktoolkit.endpoints._app import ResourceVisibility, TaskEndpoints
from tasktoolkit.endpoints._openapi import openapi_document
from tasktoolkit.http_errors import error_response
from tasktoolkit.orm import TaskResource
from tasktoolkit.orm._deadline import DEFAULT_DEADLINE
from tasktoolkit.orm._resource import resource_types

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["Router", "mount"]

_COLLECTION = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_PREFIX = re.compile(r"\A(/[A-Za-z0-9_.~-]+)*\Z")
_RESERVED = frozenset({"tasks", "operations"})


def mount(
    mapper: Any,
    *,
    collections: Mapping[str, type[TaskResource]],
    session_factory: Callable[[], Session],
    caller_getter: CallerGetter = keystone_caller,
    authorize: Authorize = default_authorize,
    visibility: ResourceVisibility | None = None,
    path_prefix: str = "",
    retry_after: int = 1,
    deadline: float | None = DEFAULT_DEADLINE,
    serve_openapi: bool = False,
    openapi_path: str = "/openapi.json",
    max_wait: int = 30,
    pages: bool = True,
) -> TaskEndpoints:
    """Connect the task endpoints on a Routes ``mapper``; returns their WSGI app.

    Connects, under ``path_prefix``, for each collection ``C`` of ``collections``:
    ``/C/{resource_id}/tasks``, ``/C/{resource_id}/tasks/{task_id}``,
    ``/C/{resource_id}/tasks/{task_id}/cancel``; and ``/tasks``,
    ``/tasks/{task_id}``, ``/operations``, ``/operations/{operation_id}``,
    ``/operations/{operation_id}/cancel``.
    The host's own routes on the same mapper are untouched.

    :param collections: URL collection name -> resource model.
    :param session_factory: makes one session per request.
    :param caller_getter: the caller from the environ (default: keystonemiddleware's headers).
    :param authorize: ``authorize(caller, rule, target)``: whether the caller may do what
        the rule names (``tasktoolkit:tasks:list``, ...) on the target (default:
        :func:`~tasktoolkit.caller.default_authorize`; oslo.policy:
        :class:`tasktoolkit.oslo.PolicyAuthorizer`).
    :param visibility: whether a caller may see a resource (default: it exists and is in
        the caller's project; those who may list every project's tasks see all).
    :param path_prefix: where the host's API lives on the mapper (``/v2.0``).
    :param retry_after: seconds in ``Retry-After`` on a running operation.
    :param deadline: seconds a request's database work may take before it is
        answered ``503`` with ``Retry-After``; ``None``: no limit.
    :param serve_openapi: also answer ``GET <path_prefix><openapi_path>`` with the
        OpenAPI document of what is mounted (:func:`openapi_document`).
    :param openapi_path: where the document is served.
    :param max_wait: the longest ``Prefer: wait=<seconds>`` a ``GET`` of an
        operation or a task is held for (a thread of the server each).
    :param pages: answer a browser (a request preferring ``text/html``) with
        pages, and serve their stylesheet and script under
        ``<path_prefix>/_tasktoolkit/``; needs the ``[pages]`` extra (Jinja2),
        without which every request gets JSON.
    """
    _check_mount(collections, path_prefix, openapi_path)
    app = TaskEndpoints(
        collections=collections,
        session_factory=session_factory,
        caller_getter=caller_getter,
        authorize=authorize,
        visibility=visibility,
        retry_after=retry_after,
        deadline=deadline,
        openapi=_openapi(collections, path_prefix) if serve_openapi else None,
        max_wait=max_wait,
        pages=pages,
        path_prefix=path_prefix,
    )
    _connect(mapper, app, list(collections), path_prefix)
    if app.pages is not None:
        assets = app.pages.assets
        mapper.connect("tasktoolkit.page_assets", path_prefix + assets.route, controller=assets)
    if serve_openapi:
        mapper.connect(
            "tasktoolkit.openapi", f"{path_prefix}{openapi_path}", controller=app, action="openapi"
        )
    return app


def _openapi(collections: Mapping[str, type[TaskResource]], path_prefix: str) -> dict[str, Any]:
    """The OpenAPI document of what is mounted."""
    return openapi_document(
        collections=list(collections), path_prefix=path_prefix, resource_types=resource_types()
    )


def _check_mount(
    collections: Mapping[str, type[TaskResource]], path_prefix: object, openapi_path: object
) -> None:
    """Refuse what :func:`mount` cannot mount, before anything is connected."""
    if not isinstance(path_prefix, str) or not _PREFIX.match(path_prefix):
        raise ValueError(f"path_prefix must be '' or like '/v2.0' (no trailing /): {path_prefix!r}")
    if not isinstance(openapi_path, str) or not openapi_path or not _PREFIX.match(openapi_path):
        raise ValueError(f"openapi_path must be like '/openapi.json': {openapi_path!r}")
    known = set(resource_types().values())
    for name, model in collections.items():
        if not isinstance(name, str) or not _COLLECTION.match(name) or name in _RESERVED:
            raise ValueError(f"bad collection name {name!r}")
        if not isinstance(model, type) or model not in known:
            raise TypeError(f"collection {name!r}: {model!r} is not a TaskResource model")


def _connect(mapper: Any, app: TaskEndpoints, collections: list[str], prefix: str) -> None:
    """Connect the toolkit's routes, each named ``tasktoolkit.<...>``, to ``app``."""
    for name in collections:
        base = f"{prefix}/{name}/{{resource_id}}/tasks"
        for suffix, action, route in (
            ("", "resource_tasks", "tasks"),
            ("/{task_id}", "resource_task", "task"),
            ("/{task_id}/cancel", "cancel", "cancel"),
        ):
            mapper.connect(
                f"tasktoolkit.{name}.{route}",
                base + suffix,
                controller=app,
                action=action,
                collection=name,
            )
    for path, action in (
        ("/tasks", "tasks"),
        ("/tasks/{task_id}", "task"),
        ("/operations", "operations"),
        ("/operations/{operation_id}", "operation"),
        ("/operations/{operation_id}/cancel", "cancel_operation"),
    ):
        mapper.connect(f"tasktoolkit.{action}", prefix + path, controller=app, action=action)


class Router:
    """A WSGI app that routes with a Routes mapper and calls the matched controller.

    Like OpenStack's ``wsgi.Router``: every route's ``controller`` must be a
    WSGI app; the match is in ``environ["wsgiorg.routing_args"]``. No match is
    a 404 in the contract's error format. Nothing is kept on the router per
    request (``RoutesMiddleware`` runs with ``singleton=False``).
    """

    def __init__(self, mapper: Any) -> None:
        self.mapper = mapper
        self._routes = RoutesMiddleware(
            self._dispatch, mapper, use_method_override=False, singleton=False
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self._routes(environ, start_response)  # type: ignore[no-any-return]

    @staticmethod
    def _dispatch(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        routing = environ.get(ROUTING_ARGS_KEY)
        match = routing[1] if isinstance(routing, tuple) else None
        controller: WSGIApplication | None = match.get("controller") if match else None
        if controller is None or not callable(controller):
            response = error_response(environ, 404, "tasktoolkit.not_found", "no such resource")
            return response(environ, start_response)  # type: ignore[no-any-return]
        return controller(environ, start_response)
