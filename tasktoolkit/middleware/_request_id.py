"""Request ids: a fresh ``req-<uuid4>`` per request, in the environ, the context and the response.

A valid inbound id (the ``header``, one of the compatibility headers, or
``X-OpenStack-Request-ID``, which keystoneauth sends) is kept only as the
*global* request id, for tracing across services; it is never used as this
request's id, so a caller cannot make its request look like (or attach to)
someone else's. Anything that is not a well-formed id is dropped.

When a middleware in front (oslo.middleware's ``RequestId``) already gave the
request an id, in ``openstack.request_id``, that id is this request's id and
its ``openstack.global_request_id`` the global one: one id per request.

Every request runs inside the hooks' ``around_request`` (the app and its body).

Example (the header OpenStack services answer with)::

    app = RequestIdMiddleware(app, settings=Settings(request_id_header="X-OpenStack-Request-ID"))
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from tasktoolkit._environ import (
    GLOBAL_REQUEST_ID_KEY,
    OPENSTACK_GLOBAL_REQUEST_ID_KEY,
    OPENSTACK_REQUEST_ID_KEY,
    OPERATION_ID_KEY,
    OPERATION_LOCATION_KEY,
    REQUEST_ID_KEY,
    SETTINGS_KEY,
)
from tasktoolkit.caller import caller_id_fits, keystone_caller
from tasktoolkit.context import RequestContext, bind, is_valid_request_id, reset
from tasktoolkit.errors import ApplicationError
from tasktoolkit.hooks import RequestInfo
from tasktoolkit.http_errors import response_for
from tasktoolkit.middleware._iter import ClosingIterator
from tasktoolkit.middleware._paste import settings_for
from tasktoolkit.settings import Settings, settings_or_default

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["OPENSTACK_HEADER", "RequestIdMiddleware", "fast_request_id"]

#: The header OpenStack services answer with, and keystoneauth sends a global id in.
OPENSTACK_HEADER = "X-OpenStack-Request-ID"

_log = logging.getLogger("tasktoolkit.middleware")

# The variant nibble of a RFC 4122 uuid is 10xx: 8, 9, a or b.
_VARIANT = "89ab" * 4


def fast_request_id() -> str:
    """A fresh ``req-<uuid4>``, the same as :func:`tasktoolkit.context.new_request_id`.

    Built from ``os.urandom`` directly: ``uuid.uuid4()`` spends most of its
    time building a ``UUID`` object that would only be formatted again.
    """
    h = os.urandom(16).hex()
    return f"req-{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"


def _keystone_ids(environ: Mapping[str, Any]) -> tuple[str | None, str | None]:
    # keystone_caller's project and user, without building a Caller (and its
    # roles) on every request: this runs on every GET.
    project = environ.get("HTTP_X_PROJECT_ID")
    if project is not None:
        project = (project.strip() or None) if isinstance(project, str) else None
    user = environ.get("HTTP_X_USER_ID")
    if user is not None:
        user = (user.strip() or None) if isinstance(user, str) else None
    return project, user


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def opens_operation(settings: Settings, environ: Mapping[str, Any]) -> bool:
    """Whether the request gets an operation: a configured method, a path not excluded."""
    if environ.get("REQUEST_METHOD") not in settings.methods:
        return False
    path_info = environ.get("PATH_INFO", "")
    for prefix in settings.exclude_paths:
        if prefix == "/" or path_info == prefix or path_info.startswith(prefix + "/"):
            return False
    return True


class RequestIdMiddleware:
    """Give every request a fresh id; bind a :class:`~tasktoolkit.context.RequestContext`.

    The ids go to the environ (:data:`REQUEST_ID_KEY`, :data:`GLOBAL_REQUEST_ID_KEY`
    and oslo.context's keys), to the context variable for the ORM and logging
    (reset once the response body is closed, or when the app raises), and to
    the response header, unless the app already set that header.

    :param settings: its knobs: ``request_id_header`` (the response header,
        also read for an inbound global id; OpenStack services should use
        ``X-OpenStack-Request-ID``), ``compat_headers`` (more headers to answer
        with and to read an inbound id from; ``X-OpenStack-Request-ID`` is
        always read), ``caller_getter`` (the project and user for the
        context), ``hooks`` (``around_request``).
    """

    def __init__(self, app: WSGIApplication, *, settings: Settings | None = None) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI application, got {app!r}")
        settings = settings_or_default(settings)
        self.app = app
        self.settings = settings
        self.header = settings.request_id_header
        self.compat_headers = settings.compat_headers
        self.caller_getter = settings.caller_getter
        unique: dict[str, str] = {}
        for name in (self.header, *self.compat_headers):
            unique.setdefault(name.lower(), name)
        self._response_headers = tuple((name, lower) for lower, name in unique.items())
        inbound = [*unique.values(), OPENSTACK_HEADER]
        self._inbound_keys = tuple(dict.fromkeys(_environ_key(name) for name in inbound))

    @classmethod
    def factory(
        cls, global_conf: Mapping[str, str], **local_conf: str
    ) -> Callable[[WSGIApplication], RequestIdMiddleware]:
        """``paste.filter_factory``: the toolkit's options (``request_id_header``,
        ``compat_headers``, ``caller_getter``, ...), over the settings of the
        ``toolkit`` it names, if any. ``global_conf`` is not read.
        """
        _, settings = settings_for(local_conf)

        def filter_(app: WSGIApplication) -> RequestIdMiddleware:
            return cls(app, settings=settings)

        return filter_

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request_id, global_id = self._ids(environ)
        environ[REQUEST_ID_KEY] = environ[OPENSTACK_REQUEST_ID_KEY] = request_id
        environ[GLOBAL_REQUEST_ID_KEY] = environ[OPENSTACK_GLOBAL_REQUEST_ID_KEY] = global_id
        environ[SETTINGS_KEY] = self.settings
        if self.settings.hooks:
            return self._around(environ, start_response, request_id)
        return self._serve(environ, start_response, request_id, global_id)

    def _around(
        self, environ: WSGIEnvironment, start_response: StartResponse, request_id: str
    ) -> Iterable[bytes]:
        """The request inside the hooks' ``around_request``, left when its body is closed."""
        settings = self.settings
        info = RequestInfo(
            request_id,
            str(environ.get("REQUEST_METHOD", "")),
            str(environ.get("PATH_INFO", "")),
            environ,
            request_id if opens_operation(settings, environ) else None,
        )
        around = settings.hooks.around_request(info)
        around.__enter__()
        try:
            result = self._serve(
                environ, start_response, request_id, environ[GLOBAL_REQUEST_ID_KEY]
            )
        except BaseException as exc:
            around.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return ClosingIterator(result, lambda: _leave(around))

    def _serve(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        request_id: str,
        global_id: str | None,
    ) -> Iterable[bytes]:
        project_id, user_id = self._caller_ids(environ)
        response_headers = self._response_headers
        started: list[bool] = []

        def start(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Any:
            started.append(True)
            for name, lower in response_headers:
                for existing, _ in headers:
                    if existing.lower() == lower:
                        break
                else:
                    headers = [*headers, (name, request_id)]
            return start_response(status, headers, exc_info)

        def answer(exc: BaseException, sent: bool) -> list[bytes] | None:
            if not isinstance(exc, Exception):
                return None  # shutting down: nothing to answer
            if sent:
                # Once a byte may have gone out, WSGI allows nothing but aborting.
                _log.error(
                    "request %s: the application raised while its body was sent",
                    request_id,
                    exc_info=exc,
                    extra=_operation_of(environ),
                )
                return None
            # Called while ``exc`` is being handled: sys.exc_info() is its.
            return self._answer_error(
                environ, start_response, request_id, sys.exc_info(), bool(started)
            )

        token = bind(RequestContext(request_id, global_id, project_id, user_id))
        try:
            result = self.app(environ, start)
        except BaseException as exc:
            try:
                if (body := answer(exc, False)) is not None:
                    return body
                raise
            finally:
                reset(token)
        if type(result) is list or type(result) is tuple:
            # Iterating a list runs no application code: the context can go now.
            reset(token)
            return result
        return ClosingIterator(result, lambda: _reset_quietly(token), answer)

    def _ids(self, environ: WSGIEnvironment) -> tuple[str, str | None]:
        """This request's id and its global id."""
        upstream = environ.get(OPENSTACK_REQUEST_ID_KEY)
        if upstream is not None and is_valid_request_id(upstream):
            # Named by a middleware in front (oslo's RequestId), which also
            # read (and checked) the inbound global id.
            inbound = environ.get(OPENSTACK_GLOBAL_REQUEST_ID_KEY)
            return upstream, inbound if is_valid_request_id(inbound) else None
        for key in self._inbound_keys:
            inbound = environ.get(key)
            if inbound is not None and is_valid_request_id(inbound):
                return fast_request_id(), inbound
        return fast_request_id(), None

    def _caller_ids(self, environ: WSGIEnvironment) -> tuple[str | None, str | None]:
        """The caller's project and user for the context; none for ids that do not fit."""
        getter = self.caller_getter
        if getter is keystone_caller:
            project_id, user_id = _keystone_ids(environ)
        else:
            caller = getter(environ)
            project_id, user_id = caller.project_id, caller.user_id
        if not (caller_id_fits(project_id) and caller_id_fits(user_id)):
            # Never cut to fit: the operation middleware and the endpoints
            # answer such a caller with a 400; nothing is written for it.
            return None, None
        return project_id, user_id

    def _answer_error(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        request_id: str,
        exc_info: OptExcInfo,
        started: bool,
    ) -> list[bytes]:
        """The contract's JSON 500 for an app that raised before its response started.

        :param started: whether the app called ``start_response``; then the
            error goes with the new status, as WSGI asks, and the server
            re-raises it if it has sent the headers already (the app used
            ``write()``) and aborts.
        """
        _log.error(
            "request %s: the application raised",
            request_id,
            exc_info=exc_info,
            extra=_operation_of(environ),
        )
        error = ApplicationError("the server failed to answer; the error is logged with this id")
        response = response_for(environ, error)
        headers = list(response.headerlist)
        headers.extend((name, request_id) for name, _ in self._response_headers)
        location = environ.get(OPERATION_LOCATION_KEY)
        if isinstance(location, str):
            headers.append(("Operation-Location", location))
        start_response(response.status, headers, exc_info if started else None)
        return [response.body]


def _operation_of(environ: WSGIEnvironment) -> dict[str, str] | None:
    """The request's operation id for a log line made once its operation's context is left
    (the app raised through the operation middleware): every line of a request names it."""
    operation_id = environ.get(OPERATION_ID_KEY)
    return {"operation_id": operation_id} if isinstance(operation_id, str) else None


def _leave(around: AbstractContextManager[object]) -> None:
    around.__exit__(None, None, None)


def _reset_quietly(token: Any) -> None:
    try:
        reset(token)
    except ValueError:
        # The body was closed in another context (a server that copies contexts
        # per call): the binding lived, and ends, with the context that made it.
        pass
