"""One operation per mutating request, written before the app runs.

For a ``POST``, ``PUT``, ``PATCH`` or ``DELETE`` (configurable) the middleware
writes a ``running`` operation keyed by the request id, in one database round
trip on an AUTOCOMMIT connection, so it is visible (``GET /operations/<id>``)
while the request runs. It binds the operation to the request context, so the
tasks the app spawns belong to it, and answers with ``Operation-Location``.
Once the response body has been closed (or the app raised) it records the
HTTP status, the route's action and the target resource; the operation ends
then, or when the last of its tasks does.

When the database cannot be reached, a mutating request gets a ``503`` with
``Retry-After`` and the app is not called (``fail_open=True`` calls it
without an operation instead); other requests never touch the database here.

It must sit inside :class:`~tasktoolkit.middleware.RequestIdMiddleware`::

    app = RequestIdMiddleware(OperationMiddleware(app, engine=engine))
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import engine_from_config
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from tasktoolkit import signals
from tasktoolkit._checks import HTTP_TOKEN, whole_number
from tasktoolkit._environ import (
    OPERATION_ID_KEY,
    OPERATION_LOCATION_KEY,
    OPERATION_TARGET_KEY,
    REQUEST_ID_KEY,
    ROUTING_ARGS_KEY,
)
from tasktoolkit.caller import CallerGetter, check_caller, keystone_caller
from tasktoolkit.context import bind, current, reset
from tasktoolkit.errors import (
    DatabaseUnavailableError,
    InvalidCallerError,
    TaskToolkitError,
    database_unavailable,
)
from tasktoolkit.http_errors import response_for
from tasktoolkit.middleware._config import asbool, asdeadline, asint, aslist, asttl, resolve
from tasktoolkit.middleware._iter import ClosingIterator
from tasktoolkit.orm._deadline import DEFAULT_DEADLINE, check_deadline, deadline
from tasktoolkit.orm._engine import autocommit_engine, prepare_engine
from tasktoolkit.orm._expiry import DEFAULT_TTL, check_ttl
from tasktoolkit.orm._operations import OperationFields, end_request, open_operation
from tasktoolkit.signals import OperationChange

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["DEFAULT_METHODS", "OperationMiddleware", "set_operation_target"]

DEFAULT_METHODS = ("POST", "PUT", "PATCH", "DELETE")

_log = logging.getLogger("tasktoolkit.middleware")
_HOST = re.compile(r"\A[A-Za-z0-9._\-\[\]:]+\Z")


def set_operation_target(environ: WSGIEnvironment, resource_type: str, resource_id: object) -> None:
    """Record the one resource this request targets on its operation.

    Call it from the app (``POST /ports`` once the port has an id); the
    middleware writes it when the request ends.
    """
    environ[OPERATION_TARGET_KEY] = (str(resource_type), str(resource_id))


# No database keeps NUL (PostgreSQL refuses it) or a lone surrogate (no UTF-8 for it).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _clean(value: object, limit: int) -> str | None:
    """Text fit for a column: NUL and lone surrogates replaced, at most ``limit`` chars.

    For what the request only describes (its path, the route's action); ids
    that select records are refused instead (:func:`~tasktoolkit.caller.check_caller`).
    """
    if not isinstance(value, str) or not value:
        return None
    return _UNSTORABLE.sub("\ufffd", value)[:limit]


def _decoded(value: str) -> str:
    # WSGI hands paths over as latin-1 decoded bytes; the client meant UTF-8.
    try:
        return value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return value


class OperationMiddleware:
    """Write an operation for every mutating request and finish it from the response.

    :param engine: the database the operations go to (the app's own).
    :param methods: the methods that open an operation.
    :param exclude_paths: ``PATH_INFO`` prefixes that never open one
        (``/healthcheck`` excludes ``/healthcheck`` and ``/healthcheck/x``).
    :param caller_getter: reads the project and user to record.
    :param ttl: how long a finished operation is kept; ``None`` keeps it.
    :param operations_path: where the operations endpoint is mounted, relative
        to the application URL (``SCRIPT_NAME`` included).
    :param base_url: the application URL for ``Operation-Location`` when the
        environ does not know it (behind a proxy); default: from the environ.
    :param fail_open: when the database is down, call the app without an
        operation instead of answering ``503``.
    :param retry_after: seconds in the ``503``'s ``Retry-After``.
    :param deadline: seconds the middleware's own database work (writing the
        operation before the app, its end after) may take before it gives up
        (a ``503`` before the app; a logged error after); ``None``: no limit.
        Its own connections also get it as the server's statement and lock
        timeout, and its own pool as its checkout timeout. See
        :func:`tasktoolkit.orm.deadline`.
    :param durable: wait for each of the middleware's own writes to reach the
        disk. Off by default on PostgreSQL (``synchronous_commit = off`` on the
        middleware's own connections only): a commit there costs a disk flush,
        which would triple the database cost of a typical request, and the app's
        own commit flushes the operation with it. No effect on SQLite and
        MariaDB, whose commit durability is not a per-connection choice.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        engine: Engine,
        methods: Iterable[str] = DEFAULT_METHODS,
        exclude_paths: Iterable[str] = (),
        caller_getter: CallerGetter = keystone_caller,
        ttl: timedelta | None = DEFAULT_TTL,
        operations_path: str = "/operations",
        base_url: str | None = None,
        fail_open: bool = False,
        retry_after: int = DatabaseUnavailableError.RETRY_AFTER,
        durable: bool = False,
        deadline: float | None = DEFAULT_DEADLINE,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI application, got {app!r}")
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be a SQLAlchemy Engine, got {engine!r}")
        if isinstance(methods, str) or isinstance(exclude_paths, str):
            raise TypeError("methods and exclude_paths must be lists, not a string")
        methods = tuple(m.upper() for m in methods)
        for method in methods:
            if not HTTP_TOKEN.match(method):
                raise ValueError(f"not an HTTP method: {method!r}")
        exclude = tuple(exclude_paths)
        for prefix in exclude:
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise ValueError(f"exclude_paths entries must start with '/', got {prefix!r}")
        if not callable(caller_getter):
            raise TypeError(f"caller_getter must be callable, got {caller_getter!r}")
        if not isinstance(operations_path, str) or not operations_path.startswith("/"):
            raise ValueError(f"operations_path must start with '/', got {operations_path!r}")
        if base_url is not None and not re.match(r"\Ahttps?://[!-~]+\Z", base_url):
            raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
        whole_number(retry_after, "retry_after", minimum=0)
        self.app = app
        self.engine = prepare_engine(engine)
        self.methods = frozenset(methods)
        self.exclude_paths = tuple(p.rstrip("/") or "/" for p in exclude)
        self.caller_getter = caller_getter
        self.ttl = check_ttl(ttl, what="operation ttl")
        self.operations_path = operations_path.rstrip("/")
        self.base_url = None if base_url is None else base_url.rstrip("/")
        self.fail_open = bool(fail_open)
        self.retry_after = retry_after
        self.durable = bool(durable)
        self.deadline = check_deadline(deadline)
        self._writer, self._owns_writer = autocommit_engine(
            self.engine, durable=self.durable, deadline=self.deadline
        )

    @classmethod
    def factory(
        cls, global_conf: Mapping[str, str], **local_conf: str
    ) -> Callable[[WSGIApplication], OperationMiddleware]:
        """``paste.filter_factory``. The database is ``db_url`` (or ``sqlalchemy.url``).

        Other options: ``methods`` and ``exclude_paths`` (comma or space
        separated), ``caller_getter`` (``package.module:function``), ``ttl``
        (seconds, or ``none``), ``operations_path``, ``base_url``, ``fail_open``
        and ``durable`` (true/false), ``retry_after`` (seconds), ``deadline`` (seconds,
        or ``none``), and any ``sqlalchemy.*`` engine
        option (``sqlalchemy.pool_size = 10``). ``global_conf`` is not read.
        """
        conf = dict(local_conf)
        db_url = conf.pop("db_url", None)
        engine_conf = {k: conf.pop(k) for k in list(conf) if k.startswith("sqlalchemy.")}
        if db_url is not None:
            engine_conf["sqlalchemy.url"] = db_url
        if not engine_conf.get("sqlalchemy.url"):
            raise ValueError("operations filter: set db_url (or sqlalchemy.url)")
        options: dict[str, Any] = {}
        for key, value in conf.items():
            if key in ("methods", "exclude_paths"):
                options[key] = aslist(value, name=key)
            elif key == "caller_getter":
                options[key] = resolve(value, name=key)
            elif key == "ttl":
                options[key] = asttl(value, name=key)
            elif key in ("operations_path", "base_url"):
                options[key] = value.strip()
            elif key in ("fail_open", "durable"):
                options[key] = asbool(value, name=key)
            elif key == "retry_after":
                options[key] = asint(value, name=key)
            elif key == "deadline":
                options[key] = asdeadline(value, name=key)
            else:
                raise ValueError(f"operations filter: unknown option {key!r}")
        engine = engine_from_config(engine_conf, prefix="sqlalchemy.")

        def filter_(app: WSGIApplication) -> OperationMiddleware:
            return cls(app, engine=engine, **options)

        return filter_

    def close(self) -> None:
        """Close the middleware's own connections (not the app's engine)."""
        if self._owns_writer:
            self._writer.dispose()

    def _excluded(self, path_info: str) -> bool:
        for prefix in self.exclude_paths:
            if prefix == "/" or path_info == prefix or path_info.startswith(prefix + "/"):
                return True
        return False

    def _location(self, environ: WSGIEnvironment, request_id: str) -> str:
        base = self.base_url
        if base is None:
            script_name = environ.get("SCRIPT_NAME", "")
            try:
                base = quote(script_name.encode("latin-1"), safe="/;=,~!$&'()*+@:-._")
            except UnicodeEncodeError:
                base = ""
            base = base.rstrip("/")
            scheme = environ.get("wsgi.url_scheme")
            host = environ.get("HTTP_HOST")
            if not host:
                name, port = environ.get("SERVER_NAME"), environ.get("SERVER_PORT")
                host = f"{name}:{port}" if name and port else name
                if host and (scheme, port) in (("http", "80"), ("https", "443")):
                    host = name
            # A host we cannot vouch for (CR/LF, spaces, ...) never reaches a
            # header: the location is then relative to the server.
            if scheme in ("http", "https") and isinstance(host, str) and _HOST.match(host):
                base = f"{scheme}://{host}{base}"
        return f"{base}{self.operations_path}/{request_id}"

    def _open(self, fields: OperationFields) -> OperationChange:
        with deadline(self.deadline):
            return self._open_once_or_twice(fields)

    def _open_once_or_twice(self, fields: OperationFields) -> OperationChange:
        for attempt in range(2):
            try:
                with self._writer.connect() as connection:
                    return open_operation(connection, fields, ttl=self.ttl)
            except DBAPIError as exc:
                # A pooled connection the server dropped (a restart) is
                # invalidated with its pool: one retry gets a fresh one.
                if attempt or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _refuse(
        environ: WSGIEnvironment, start_response: StartResponse, error: TaskToolkitError
    ) -> Iterable[bytes]:
        """Answer ``error`` without calling the app (and without an operation)."""
        response = response_for(environ, error)
        return response(environ, start_response)  # type: ignore[no-any-return]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method not in self.methods:
            return self.app(environ, start_response)
        path_info = environ.get("PATH_INFO", "")
        if self.exclude_paths and self._excluded(path_info):
            return self.app(environ, start_response)
        ctx = current()
        request_id = environ.get(REQUEST_ID_KEY)
        if ctx is None or request_id is None or ctx.request_id != request_id:
            raise RuntimeError("OperationMiddleware must be wrapped by RequestIdMiddleware")
        try:
            caller = check_caller(self.caller_getter(environ))
        except InvalidCallerError as error:
            return self._refuse(environ, start_response, error)
        project_id, user_id = caller.project_id, caller.user_id
        fields = OperationFields(
            id=request_id,
            method=method,
            path=_clean(_decoded(environ.get("SCRIPT_NAME", "") + path_info), 2048) or "/",
            global_request_id=ctx.global_request_id,
            project_id=project_id,
            user_id=user_id,
        )
        try:
            opened = self._open(fields)
        except SQLAlchemyError as exc:
            if not database_unavailable(exc):
                raise
            _log.warning(
                "operation %s not written: database unavailable (%s)",
                request_id,
                "calling the app without it" if self.fail_open else "answering 503",
                exc_info=True,
            )
            if self.fail_open:
                return self.app(environ, start_response)
            return self._refuse(
                environ, start_response, DatabaseUnavailableError(retry_after=self.retry_after)
            )
        environ[OPERATION_ID_KEY] = request_id
        signals.send(signals.operation_opened, opened)
        return self._run(environ, start_response, request_id, ctx, project_id, user_id)

    def _run(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        request_id: str,
        ctx: Any,
        project_id: str | None,
        user_id: str | None,
    ) -> Iterable[bytes]:
        location = environ[OPERATION_LOCATION_KEY] = self._location(environ, request_id)
        # Per-request state lives in this frame and its closures, never on self.
        status: list[int] = [500]

        def start(
            status_line: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Any:
            try:
                status[0] = int(status_line[:3])
            except ValueError:
                status[0] = 500
            if not any(name.lower() == "operation-location" for name, _ in headers):
                headers = [*headers, ("Operation-Location", location)]
            return start_response(status_line, headers, exc_info)

        def failed(exc: BaseException) -> None:
            status[0] = 500

        def finish() -> None:
            try:
                self._finish(environ, request_id, status[0])
            finally:
                reset(token)

        token = bind(replace(ctx, operation_id=request_id, project_id=project_id, user_id=user_id))
        try:
            result = self.app(environ, start)
        except BaseException:
            status[0] = 500
            finish()
            raise
        # Wrapped even when it is a list: the status is written after the
        # server has sent the body, so the client does not wait for it.
        return ClosingIterator(result, finish, failed)

    def _finish(self, environ: WSGIEnvironment, request_id: str, http_status: int) -> None:
        action = None
        routing = environ.get(ROUTING_ARGS_KEY)
        if isinstance(routing, tuple) and len(routing) == 2 and isinstance(routing[1], dict):
            found = routing[1].get("action")
            action = _clean(found, 64)
        resource_type = resource_id = None
        target = environ.get(OPERATION_TARGET_KEY)
        if isinstance(target, tuple) and len(target) == 2:
            resource_type, resource_id = _clean(target[0], 64), _clean(target[1], 64)
        try:
            with deadline(self.deadline), self._writer.connect() as connection:
                finished = end_request(
                    connection,
                    request_id,
                    http_status,
                    action=action,
                    resource_type=resource_type,
                    resource_id=resource_id,
                )
        except SQLAlchemyError as exc:
            if not database_unavailable(exc):
                raise
            # The response is gone already; the operation stays running (and
            # shows the request never ended) rather than failing the server.
            _log.error(
                "operation %s: could not record the end of its request", request_id, exc_info=True
            )
            return
        if finished is not None:
            signals.send(signals.operation_finished, finished)
