"""The WSGI app behind every mounted route: it reads the route match, dispatches, represents.

One :class:`TaskEndpoints` serves all the toolkit's routes of a host; the
route's ``action`` (published by Routes in ``wsgiorg.routing_args``) names the
endpoint of the table (:mod:`._table`) that was matched. The handler answers
data; the app applies the representation (:mod:`._represent`), waits when a
client asks to (``Prefer: wait``, :mod:`._waiting`), and turns typed errors and
database outages into the contract's error responses. It keeps nothing per
request on itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from webob import Request, Response

from tasktoolkit._environ import ROUTING_ARGS_KEY, SETTINGS_KEY
from tasktoolkit.caller import check_caller
from tasktoolkit.endpoints._handlers import Call, Mounted
from tasktoolkit.endpoints._openapi import openapi_document
from tasktoolkit.endpoints._represent import (
    Representation,
    Waiting,
    negotiate,
    pages_of,
    represent,
    represent_error,
)
from tasktoolkit.endpoints._table import ENDPOINTS, Endpoint
from tasktoolkit.endpoints._visibility import ResourceVisibility, resource_visible
from tasktoolkit.endpoints._waiting import parse_prefer
from tasktoolkit.errors import DatabaseUnavailableError, TaskToolkitError
from tasktoolkit.http_errors import error_response, response_for
from tasktoolkit.orm import TaskResource, prepare_engine
from tasktoolkit.orm._deadline import deadline, fresh_deadline
from tasktoolkit.orm._listening import Waiter, waiter_for
from tasktoolkit.orm._resource import resource_types
from tasktoolkit.settings import Settings, settings_or_default

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from tasktoolkit.pages import Pages

__all__ = ["TaskEndpoints"]

_BY_NAME: dict[str, Endpoint] = {endpoint.name: endpoint for endpoint in ENDPOINTS}


class TaskEndpoints:
    """The toolkit's endpoints as one WSGI app, dispatched on the route's ``action``.

    Every knob is read from ``settings``: the caller getter, the authorization
    hook, the path prefix, the deadline, ``retry_after``, ``max_wait``,
    ``max_waiting``, ``serve_openapi``, ``pages`` and the hooks (a database
    outage is answered ``503`` through :meth:`~tasktoolkit.hooks.Hooks.unavailable`).

    :param collections: URL collection name -> resource model (``{"ports": Port}``).
    :param session_factory: makes a session per request (a ``sessionmaker``).
    :param settings: the toolkit's settings.
    :param visibility: whether a caller may see a resource; default
        :func:`~tasktoolkit.endpoints.resource_visible`.
    """

    def __init__(
        self,
        *,
        collections: Mapping[str, type[TaskResource]],
        session_factory: Callable[[], Session],
        settings: Settings,
        visibility: ResourceVisibility | None = None,
    ) -> None:
        if not callable(session_factory):
            raise TypeError("session_factory must make sessions (a sessionmaker)")
        settings = settings_or_default(settings)
        bind = getattr(session_factory, "kw", {}).get("bind")
        if isinstance(bind, Engine):
            prepare_engine(bind)  # lets the deadline reach its connections
        self.collections = dict(collections)
        self.session_factory = session_factory
        self.settings = settings
        # Built once: what is mounted, and its document, do not change.
        self._mounted = Mounted(
            collections=self.collections,
            visibility=visibility or resource_visible,
            retry_after=str(int(settings.retry_after.total_seconds())),
            openapi=openapi_document(
                collections=list(self.collections),
                path_prefix=settings.path_prefix,
                resource_types=resource_types(),
            )
            if settings.serve_openapi
            else None,
        )
        self._max_wait = int(settings.max_wait.total_seconds())
        #: The pages a browser gets (:mod:`tasktoolkit.pages`), or ``None``: not
        #: asked for (``settings.pages``), or Jinja2 is not installed.
        self.pages: Pages | None = (
            pages_of(self.collections, settings.path_prefix, self._max_wait)
            if settings.pages
            else None
        )
        # The waits this process holds now (each holds a thread of the server).
        self._holding = 0
        self._holding_lock = threading.Lock()
        # Made at the first wait, then shared by every request (like a pool).
        self._waiter: Waiter | None = None
        self._waiter_lock = threading.Lock()

    @property
    def waiting(self) -> int:
        """How many ``Prefer: wait`` requests this app holds now (at most ``max_waiting``)."""
        return self._holding

    def close(self) -> None:
        """Stop listening for changes (PostgreSQL), if a wait ever started to."""
        with self._waiter_lock:
            if self._waiter is not None:
                self._waiter.close()
                self._waiter = None

    # -- WSGI ---------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        response = self.respond(environ)
        return response(environ, start_response)  # type: ignore[no-any-return]

    def serves(self, environ: WSGIEnvironment, match: Mapping[str, Any]) -> bool:
        """Whether a request routed here with ``match`` has an endpoint that takes its method
        (else :meth:`respond` answers it 404 or 405 before doing anything)."""
        action = match.get("action")
        endpoint = _BY_NAME.get(action) if isinstance(action, str) else None
        return endpoint is not None and environ.get("REQUEST_METHOD", "GET") in endpoint.methods

    def respond(self, environ: WSGIEnvironment) -> Response:
        """The response to one request routed here."""
        routing = environ.get(ROUTING_ARGS_KEY)
        match: Mapping[str, Any] = routing[1] if isinstance(routing, tuple) else {}
        action = match.get("action")
        endpoint = _BY_NAME.get(action) if isinstance(action, str) else None
        if endpoint is None:
            return error_response(environ, 404, "tasktoolkit.not_found", "no such endpoint")
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in endpoint.methods:
            allowed = ", ".join(endpoint.methods)
            return error_response(
                environ,
                405,
                "tasktoolkit.method_not_allowed",
                f"{method} is not allowed here; use {allowed}",
                headers=[("Allow", allowed)],
            )
        settings = self.settings
        # The error responses read the request's settings (the middleware's, else these).
        environ.setdefault(SETTINGS_KEY, settings)
        how = negotiate(environ, endpoint.name, self.pages)
        request = Request(environ if how.pages is None else how.pages.form_environ(environ))
        try:
            caller = check_caller(settings.caller_getter(environ))
            with deadline(settings.deadline_seconds), self.session_factory() as session:
                call = Call(self._mounted, session, request, match, caller, settings.authorize)
                answer = endpoint.handler(call)
                settings.hooks.available("endpoints")
                if isinstance(answer, Waiting):
                    return self._wait(answer, call, how)
                return represent(answer, request, how)
        except TaskToolkitError as error:
            return represent_error(response_for(environ, error), request, how)
        except Exception as error:  # the database's errors, SQLAlchemy's or oslo.db's
            doing = f"{method} {request.path} answered 503"
            if not settings.hooks.unavailable("endpoints", error, doing=doing):
                raise
            return represent_error(response_for(environ, DatabaseUnavailableError()), request, how)

    # -- waiting -------------------------------------------------------------

    def _wait(self, waiting: Waiting, call: Call, how: Representation) -> Response:
        """The record's response, once ``Prefer: wait`` allows (see :mod:`._waiting`).

        Past :attr:`Settings.max_waiting` waits at once in this process, the
        record is answered as it is, without ``Preference-Applied``: a client
        holding many waits cannot take every thread of the server.
        """
        request = call.request
        wait = parse_prefer(request.headers.get("Prefer"), cap=self._max_wait)
        if wait is None or not self._hold():
            return represent(waiting.read()[0], request, how)
        try:
            response = self._held(waiting, call, wait, how)
        finally:
            with self._holding_lock:
                self._holding -= 1
        response.headers["Preference-Applied"] = f"wait={wait}"
        return response

    def _hold(self) -> bool:
        """Count one more wait held, if :attr:`Settings.max_waiting` allows."""
        with self._holding_lock:
            if self._holding >= self.settings.max_waiting:
                return False
            self._holding += 1
            return True

    def _held(self, waiting: Waiting, call: Call, wait: int, how: Representation) -> Response:
        until = time.monotonic() + wait
        conditional = "If-None-Match" in call.request.headers
        with self._waiter_of(call.session).subscribe(waiting.record_id) as changes:
            reads = 0
            while True:
                # Each read after the first is bounded on its own, not by the
                # request's deadline, which a long wait outlives.
                with fresh_deadline(self.settings.deadline_seconds) if reads else nullcontext():
                    answer, terminal = waiting.read()
                    call.session.close()  # no transaction, no connection held while waiting
                response = represent(answer, call.request, how)
                reads += 1
                remaining = until - time.monotonic()
                if terminal or (conditional and response.status_int != 304) or remaining <= 0:
                    return response
                changes.wait(remaining)

    def _waiter_of(self, session: Session) -> Waiter:
        with self._waiter_lock:
            if self._waiter is None:
                bind = session.get_bind()
                self._waiter = waiter_for(bind if isinstance(bind, Engine) else bind.engine)
            return self._waiter
