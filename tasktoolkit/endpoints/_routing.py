"""Mounting the endpoints on a host's Routes mapper, and a small dispatcher.

Each connected route's ``controller`` is a WSGI app (a :class:`TaskEndpoints`),
as OpenStack's ``Router`` expects: it calls ``match["controller"]`` with the
environ that ``RoutesMiddleware`` filled with ``wsgiorg.routing_args``. The
routes are the endpoint table's (:data:`~tasktoolkit.endpoints._table.ENDPOINTS`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from routes.middleware import RoutesMiddleware
from sqlalchemy.orm import Session

from tasktoolkit._environ import ROUTING_ARGS_KEY
from tasktoolkit.endpoints._app import TaskEndpoints
from tasktoolkit.endpoints._table import ENDPOINTS
from tasktoolkit.endpoints._visibility import ResourceVisibility
from tasktoolkit.http_errors import error_response
from tasktoolkit.orm import TaskResource
from tasktoolkit.orm._resource import resource_types
from tasktoolkit.settings import Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["Router", "mount"]

_COLLECTION = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
#: Names a collection cannot take: the first part of the toolkit's own paths.
_RESERVED = frozenset(e.path.split("/")[1] for e in ENDPOINTS if not e.of_resource)


def mount(
    mapper: Any,
    *,
    collections: Mapping[str, type[TaskResource]],
    session_factory: Callable[[], Session],
    settings: Settings,
    visibility: ResourceVisibility | None = None,
) -> TaskEndpoints:
    """Connect the task endpoints on a Routes ``mapper``; returns their WSGI app.

    Connects every endpoint of the table under ``settings.path_prefix``: for
    each collection ``C`` of ``collections``, ``/C/{resource_id}/tasks``,
    ``/C/{resource_id}/tasks/{task_id}``, ``/C/{resource_id}/tasks/{task_id}/cancel``;
    and ``/tasks``, ``/tasks/{task_id}``, ``/operations``,
    ``/operations/{operation_id}``, ``/operations/{operation_id}/cancel``; with
    ``settings.serve_openapi``, ``/openapi.json``; with ``settings.pages`` (and
    Jinja2), the pages' stylesheet and script under ``/_tasktoolkit/``. The
    host's own routes on the same mapper are untouched. A
    :class:`~tasktoolkit.Toolkit` does this with its settings:
    ``toolkit.mount(mapper, collections=...)``.

    :param collections: URL collection name -> resource model.
    :param session_factory: makes one session per request.
    :param settings: every knob (the caller getter, the authorization hook,
        the path prefix, the deadline, the Retry-After, the waits, the hooks).
    :param visibility: whether a caller may see a resource (default: it exists and is in
        the caller's project; those who may list every project's tasks see all).
    :raises ValueError: a collection name that cannot be mounted.
    :raises TypeError: a model that is not a ``TaskResource``.
    """
    _check_collections(collections)
    app = TaskEndpoints(
        collections=collections,
        session_factory=session_factory,
        settings=settings,
        visibility=visibility,
    )
    _connect(mapper, app, list(collections), settings)
    if app.pages is not None:  # their stylesheet and script, served here too
        assets = app.pages.assets
        mapper.connect(
            "tasktoolkit.page_assets", settings.path_prefix + assets.route, controller=assets
        )
    return app


def _check_collections(collections: Mapping[str, type[TaskResource]]) -> None:
    """Refuse what :func:`mount` cannot mount, before anything is connected."""
    known = set(resource_types().values())
    for name, model in collections.items():
        if not isinstance(name, str) or not _COLLECTION.match(name) or name in _RESERVED:
            raise ValueError(f"bad collection name {name!r}")
        if not isinstance(model, type) or model not in known:
            raise TypeError(f"collection {name!r}: {model!r} is not a TaskResource model")


def _connect(mapper: Any, app: TaskEndpoints, collections: Iterable[str], s: Settings) -> None:
    """Connect the table's routes, each named ``tasktoolkit.[<collection>.]<name>``, to ``app``."""
    for endpoint in ENDPOINTS:
        if endpoint.name == "openapi" and not s.serve_openapi:
            continue
        if not endpoint.of_resource:
            mapper.connect(
                f"tasktoolkit.{endpoint.name}",
                s.path_prefix + endpoint.path,
                controller=app,
                action=endpoint.name,
            )
            continue
        for name in collections:
            mapper.connect(
                f"tasktoolkit.{name}.{endpoint.name}",
                s.path_prefix + endpoint.path_of(name),
                controller=app,
                action=endpoint.name,
                collection=name,
            )


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

    def serves(self, environ: WSGIEnvironment) -> bool:
        """Whether a route takes this request's path and method (else it is answered 404 or
        405 before anything runs): a route matches and its controller, when it can tell
        (a ``serves(environ, match)`` method, as :class:`TaskEndpoints` has), takes the method.

        The operation middleware asks it before reserving an ``Idempotency-Key``: a key
        sent with a request no route serves is answered as if it had none.
        """
        found = self.mapper.routematch(environ=environ)
        if not found:
            return False
        match = found[0]
        controller = match.get("controller")
        if controller is None or not callable(controller):
            return False
        takes = getattr(controller, "serves", None)
        return bool(takes(environ, match)) if callable(takes) else True

    @staticmethod
    def _dispatch(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        routing = environ.get(ROUTING_ARGS_KEY)
        match = routing[1] if isinstance(routing, tuple) else None
        controller: WSGIApplication | None = match.get("controller") if match else None
        if controller is None or not callable(controller):
            response = error_response(environ, 404, "tasktoolkit.not_found", "no such resource")
            return response(environ, start_response)  # type: ignore[no-any-return]
        return controller(environ, start_response)
