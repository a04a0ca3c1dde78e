"""One operation per mutating request, written with what the request did.

For a ``POST``, ``PUT``, ``PATCH`` or ``DELETE`` (configurable) the request
gets an operation keyed by its request id, and the response an
``Operation-Location``. The middleware sends no statement before the app's
response starts (DESIGN.md, "Where an operation is written"):

- the app's first spawn writes the operation in the app's own transaction,
  so the operation and what the request created commit together or not at
  all; once the response body is closed, one statement records the status,
  the route's action and the target, and finishes the operation if no task
  is active (non-durable on PostgreSQL, ``durable=False``);
- a request that spawned nothing, or whose spawns all rolled back, gets its
  operation, already finished, in one statement when its response starts,
  so it is readable by the time the client has the response; unless the app
  answered 503 (it could do nothing now), which gets none.

An operation whose request never recorded its end (the process died, or a
caller of the app never closed the body: a WSGI server always does, PEP 3333)
is ended by the reaper once ``request_timeout`` has passed since the request
started. When the database cannot take that one statement, the
response goes out as the app made it, without ``Operation-Location``.

A request with an ``Idempotency-Key`` is the one exception: its operation and
its key are written in one transaction before the app runs (the key's primary
key decides which of concurrent identical requests runs), its response is
kept on the key before its end is recorded, and a repeat is replayed without
calling the app (:mod:`tasktoolkit.middleware._idempotency`). When the
database cannot take that transaction, it is a ``503`` and the app is not called.

It must sit inside :class:`~tasktoolkit.middleware.RequestIdMiddleware`::

    app = RequestIdMiddleware(OperationMiddleware(app, engine=engine))
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import quote

from sqlalchemy import engine_from_config
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from tasktoolkit import signals
from tasktoolkit._checks import HTTP_TOKEN, storable, whole_number
from tasktoolkit._environ import (
    OPERATION_ID_KEY,
    OPERATION_LOCATION_KEY,
    OPERATION_TARGET_KEY,
    REQUEST_ID_KEY,
    ROUTING_ARGS_KEY,
)
from tasktoolkit.caller import CallerGetter, check_caller, keystone_caller
from tasktoolkit.context import RequestContext, bind, current, reset
from tasktoolkit.errors import (
    DatabaseUnavailableError,
    InvalidCallerError,
    TaskToolkitError,
    database_unavailable,
)
from tasktoolkit.http_errors import response_for
from tasktoolkit.middleware._config import asbool, asdeadline, asint, aslist, asttl, resolve
from tasktoolkit.middleware._idempotency import (
    ResponseRecorder,
    fingerprint,
    idempotency_key,
    raised_response,
    replay,
)
from tasktoolkit.middleware._iter import ClosingIterator
from tasktoolkit.orm._deadline import DEFAULT_DEADLINE, check_deadline, deadline
from tasktoolkit.orm._engine import autocommit_engine, prepare_engine, read_committed
from tasktoolkit.orm._expiry import DEFAULT_TTL, check_ttl
from tasktoolkit.orm._idempotency import StoredResponse, record_response, reserve
from tasktoolkit.orm._operations import (
    DEFAULT_REQUEST_TIMEOUT,
    OperationFields,
    PendingOperation,
    Target,
    check_request_timeout,
    end_request,
    write_finished,
)
from tasktoolkit.orm._retry import retrying
from tasktoolkit.signals import OperationChange

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["DEFAULT_METHODS", "OperationMiddleware", "set_operation_target"]

DEFAULT_METHODS = ("POST", "PUT", "PATCH", "DELETE")

_log = logging.getLogger("tasktoolkit.middleware")
#: An app that answers 503 did nothing it could record (its database is away,
#: most likely): its request gets no operation, rather than another wait on the
#: database before the client has the answer.
_UNAVAILABLE = 503
_R = TypeVar("_R")
_HOST = re.compile(r"\A[A-Za-z0-9._\-\[\]:]+\Z")


def set_operation_target(environ: WSGIEnvironment, resource_type: str, resource_id: object) -> None:
    """Record the one resource this request targets on its operation.

    Call it from the app (``POST /ports`` once the port has an id); the
    middleware writes it when the request ends.
    """
    environ[OPERATION_TARGET_KEY] = (str(resource_type), str(resource_id))


def _clean(value: object, limit: int) -> str | None:
    """Text fit for a column: NUL and lone surrogates replaced, at most ``limit`` chars.

    For what the request only describes (its path, the route's action); ids
    that select records are refused instead (:func:`~tasktoolkit.caller.check_caller`).
    """
    if not isinstance(value, str) or not value:
        return None
    return storable(value)[:limit]


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
    :param request_timeout: a request that has not recorded its end after this
        long is ended by the reaper (:func:`tasktoolkit.orm.reap`); 10 minutes by default.
    :param operations_path: where the operations endpoint is mounted, relative
        to the application URL (``SCRIPT_NAME`` included).
    :param base_url: the application URL for ``Operation-Location`` when the
        environ does not know it (behind a proxy); default: from the environ.
    :param durable: wait for each of the middleware's own writes to reach the
        disk. Off by default on PostgreSQL (``synchronous_commit = off`` on the
        middleware's own connections only): until the end of a request is on
        disk the operation reads ``running``, and a crash before that leaves
        it to the reaper. No effect on SQLite and MariaDB, whose commit
        durability is not a per-connection choice.
    :param accepted_retry_after: seconds in the ``Retry-After`` of a ``202``
        whose request spawned tasks (when the app set none): when to look at
        its ``Operation-Location`` first.
    :param deadline: seconds each of the middleware's own statements may take
        before it gives up (a logged warning; the response goes out without
        ``Operation-Location`` or, after it, the operation is left to the
        reaper); ``None``: no limit. Its own connections also get it as the
        server's statement and lock timeout, and its own pool as its checkout
        timeout. See :func:`tasktoolkit.orm.deadline`.
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
        request_timeout: timedelta = DEFAULT_REQUEST_TIMEOUT,
        operations_path: str = "/operations",
        base_url: str | None = None,
        durable: bool = False,
        deadline: float | None = DEFAULT_DEADLINE,
        accepted_retry_after: int = 1,
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
        whole_number(accepted_retry_after, "accepted_retry_after", minimum=0)
        self.app = app
        self.engine = prepare_engine(engine)
        self.methods = frozenset(methods)
        self.exclude_paths = tuple(p.rstrip("/") or "/" for p in exclude)
        self.caller_getter = caller_getter
        self.ttl = check_ttl(ttl, what="operation ttl")
        self._ttl_seconds = None if self.ttl is None else int(self.ttl.total_seconds())
        self.request_timeout = check_request_timeout(request_timeout)
        self.operations_path = operations_path.rstrip("/")
        self.base_url = None if base_url is None else base_url.rstrip("/")
        self.durable = bool(durable)
        self.accepted_retry_after = accepted_retry_after
        self.deadline = check_deadline(deadline)
        self._writer, self._owns_writer = autocommit_engine(
            self.engine, durable=self.durable, deadline=self.deadline
        )
        # Keyed requests write their operation and key in one transaction.
        self._keys = read_committed(self.engine)

    @classmethod
    def factory(
        cls, global_conf: Mapping[str, str], **local_conf: str
    ) -> Callable[[WSGIApplication], OperationMiddleware]:
        """``paste.filter_factory``. The database is ``db_url`` (or ``sqlalchemy.url``).

        Other options: ``methods`` and ``exclude_paths`` (comma or space
        separated), ``caller_getter`` (``package.module:function``), ``ttl``
        (seconds, or ``none``), ``request_timeout`` (seconds), ``operations_path``,
        ``base_url``, ``durable`` (true/false), ``deadline`` (seconds, or ``none``),
        ``accepted_retry_after`` (seconds), and any
        ``sqlalchemy.*`` engine option (``sqlalchemy.pool_size = 10``).
        ``global_conf`` is not read.
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
            elif key == "durable":
                options[key] = asbool(value, name=key)
            elif key == "deadline":
                options[key] = asdeadline(value, name=key)
            elif key == "accepted_retry_after":
                options[key] = asint(value, name=key)
            elif key == "request_timeout":
                options[key] = check_request_timeout(timedelta(seconds=asint(value, name=key)))
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

    def _write(self, work: Callable[[Connection], _R]) -> _R:
        """``work`` on one of the middleware's own (AUTOCOMMIT) connections, within the deadline."""
        with deadline(self.deadline):  # one deadline for both tries
            return self._write_once_or_twice(work)

    def _write_once_or_twice(self, work: Callable[[Connection], _R]) -> _R:
        for attempt in range(2):
            try:
                with self._writer.connect() as connection:
                    return work(connection)
            except DBAPIError as exc:
                # A pooled connection the server dropped (a restart) is
                # invalidated with its pool: one retry gets a fresh one.
                if attempt or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

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
            # Refused before the app runs, with no operation: ids are never cut.
            return response_for(environ, error)(environ, start_response)  # type: ignore[no-any-return]
        fields = OperationFields(
            id=request_id,
            method=method,
            path=_clean(_decoded(environ.get("SCRIPT_NAME", "") + path_info), 2048) or "/",
            global_request_id=ctx.global_request_id,
            project_id=caller.project_id,
            user_id=caller.user_id,
        )
        pending = PendingOperation(fields, self._ttl_seconds, self.request_timeout)
        keyed = None
        try:
            key = idempotency_key(environ)
            if key is not None:
                keyed = _Keyed(key, ResponseRecorder())
                stored = self._reserve(environ, pending, keyed)
                if stored is not None:
                    return replay(stored, start_response)
        except TaskToolkitError as error:  # a bad key, or one in use
            return response_for(environ, error)(environ, start_response)  # type: ignore[no-any-return]
        except Exception as exc:  # the database's errors, SQLAlchemy's or oslo.db's
            if not database_unavailable(exc):
                raise
            _log.warning("keyed request %s: database unavailable: %s", request_id, _first_line(exc))
            unavailable = response_for(environ, DatabaseUnavailableError())
            return unavailable(environ, start_response)  # type: ignore[no-any-return]
        environ[OPERATION_ID_KEY] = request_id
        return _Request(self, environ, pending, keyed).run(ctx, start_response)

    def _reserve(
        self, environ: WSGIEnvironment, pending: PendingOperation, keyed: _Keyed
    ) -> StoredResponse | None:
        """Write the operation and reserve its key in one transaction; or the replay to send."""
        digest = fingerprint(environ, keyed.recorder)
        ttl = self.ttl

        def transaction() -> OperationChange | StoredResponse:
            with self._keys.connect() as connection, connection.begin() as outer:
                fields, key = pending.fields, keyed.key
                outcome = reserve(
                    connection,
                    fields,
                    key=key,
                    fingerprint=digest,
                    ttl=ttl,
                    request_timeout=self.request_timeout,
                )
                if isinstance(outcome, StoredResponse):
                    outer.rollback()  # a replay writes no operation
                return outcome

        try:
            with deadline(self.deadline):
                outcome = retrying(transaction)
        except BaseException:
            keyed.recorder.close()
            raise
        if isinstance(outcome, StoredResponse):
            keyed.recorder.close()
            return outcome
        pending.written = True  # spawns add to its counts, its end is recorded after
        signals.send(signals.operation_opened, outcome)
        return None

    def _keep(self, pending: PendingOperation, key: str, response: StoredResponse) -> None:
        """Keep a keyed request's response for its replays, before its end is recorded."""
        fields = pending.fields
        try:
            self._write(
                lambda c: record_response(
                    c,
                    project_id=fields.project_id,
                    key=key,
                    operation_id=fields.id,
                    response=response,
                )
            )
        except Exception as exc:  # the database's errors, SQLAlchemy's or oslo.db's
            if not database_unavailable(exc):
                raise
            _log.error("operation %s: could not keep its response: %s", fields.id, _first_line(exc))

    def _target(self, environ: WSGIEnvironment) -> Target:
        """The route's action and the one resource the request targeted, as far as known."""
        action = None
        routing = environ.get(ROUTING_ARGS_KEY)
        if isinstance(routing, tuple) and len(routing) == 2 and isinstance(routing[1], dict):
            action = _clean(routing[1].get("action"), 64)
        resource_type = resource_id = None
        target = environ.get(OPERATION_TARGET_KEY)
        if isinstance(target, tuple) and len(target) == 2:
            resource_type, resource_id = _clean(target[0], 64), _clean(target[1], 64)
        return Target(action, resource_type, resource_id)

    def _record(
        self, pending: PendingOperation, work: Callable[[Connection], _R], failure: str, level: int
    ) -> _R | _NotWritten:
        """``work`` on the middleware's own connections; when the database is unavailable,
        ``failure`` is logged at ``level`` (one line) and nothing is raised."""
        try:
            return self._write(work)
        except Exception as exc:  # the database's errors, SQLAlchemy's or oslo.db's
            if not database_unavailable(exc):
                raise
            _log.log(
                level,
                "operation %s %s: the database is unavailable (%s)",
                pending.fields.id,
                failure,
                _first_line(exc),
                exc_info=_log.isEnabledFor(logging.DEBUG),
            )
            return _NOT_WRITTEN

    def _write_finished(
        self, environ: WSGIEnvironment, pending: PendingOperation, http_status: int
    ) -> bool:
        """Write the operation of a request that spawned nothing; whether it was written."""
        to = self._target(environ)
        finished = self._record(
            pending,
            lambda c: write_finished(c, pending, http_status, target=to),
            "not written",
            logging.WARNING,
        )
        if isinstance(finished, _NotWritten):
            return False
        fields = pending.fields
        opened = OperationChange(fields.id, "running", None, fields.method, fields.path)
        signals.send(signals.operation_opened, opened)
        if finished is not None:
            signals.send(signals.operation_finished, finished)
        return True

    def _end(self, environ: WSGIEnvironment, pending: PendingOperation, http_status: int) -> None:
        """Record the end of a request whose spawn wrote its operation; one statement.

        When it cannot be, the response is gone already: the operation stays
        running (and shows the request never ended) until the reaper closes it.
        """
        to = self._target(environ)
        finished = self._record(
            pending,
            lambda c: end_request(
                c,
                pending.fields.id,
                http_status,
                target=to,
                read_back=bool(signals.operation_finished.receivers),
            ),
            "could not record the end of its request",
            logging.ERROR,
        )
        if finished is not None and not isinstance(finished, _NotWritten):
            signals.send(signals.operation_finished, finished)


class _NotWritten:
    """What :meth:`OperationMiddleware._record` returns when the database was unavailable."""


_NOT_WRITTEN = _NotWritten()


class _Keyed(NamedTuple):
    """The ``Idempotency-Key`` of a request, and what its replays will be."""

    key: str
    recorder: ResponseRecorder


class _Request:
    """One request under the middleware: its status, and whether its end is recorded.

    Per-request state lives here, on the stack of the request, never on the middleware.
    """

    __slots__ = (
        "ended",
        "environ",
        "keyed",
        "location",
        "middleware",
        "pending",
        "raised",
        "status",
    )

    def __init__(
        self,
        middleware: OperationMiddleware,
        environ: WSGIEnvironment,
        pending: PendingOperation,
        keyed: _Keyed | None = None,
    ) -> None:
        self.middleware = middleware
        self.environ = environ
        self.pending = pending
        self.keyed = keyed
        self.location = middleware._location(environ, pending.fields.id)
        self.status = 500
        #: The app raised (its response is the request-id middleware's 500).
        self.raised = False
        #: The end of the request is recorded (its operation written finished).
        self.ended = False

    def run(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        fields = self.pending.fields
        token = bind(
            ctx._replace(
                operation_id=fields.id,
                project_id=fields.project_id,
                user_id=fields.user_id,
                operation=self.pending,
            )
        )

        def start(
            status_line: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Any:
            self.started(status_line)
            written = self.pending.written or self.ended
            names = {name.lower() for name, _ in headers}
            if written and "operation-location" not in names:
                headers = [*headers, ("Operation-Location", self.location)]
            if self.status == 202 and self.pending.spawned and "retry-after" not in names:
                retry_after = str(self.middleware.accepted_retry_after)
                headers = [*headers, ("Retry-After", retry_after)]
            if self.keyed is None:
                return start_response(status_line, headers, exc_info)
            self.keyed.recorder.start(status_line, headers)
            return self.keyed.recorder.writer(start_response(status_line, headers, exc_info))

        def finish() -> None:
            try:
                self.finish()
            finally:
                reset(token)

        try:
            result = self.middleware.app(self.environ, start)
        except BaseException:
            self.started("500 Internal Server Error")
            self.raised = True
            finish()
            raise
        # Wrapped even when it is a list: the end is written after the server
        # has sent the body, so the client does not wait for it.
        body = result if self.keyed is None else self.keyed.recorder.tee(result)
        return ClosingIterator(body, finish, self.failed)

    def started(self, status_line: str) -> None:
        """The response starts: a request that spawned nothing gets its operation now."""
        try:
            self.status = int(status_line[:3])
        except ValueError:
            self.status = 500
        if not self.pending.written and not self.ended and self.status != _UNAVAILABLE:
            self.ended = self.middleware._write_finished(self.environ, self.pending, self.status)
        if self.pending.written or self.ended:
            # For the request-id middleware's 500, should the app raise now.
            self.environ[OPERATION_LOCATION_KEY] = self.location

    def failed(self, exc: BaseException, sent: bool) -> None:
        """Producing the body raised: the request ended in an error (the error goes on)."""
        self.status, self.raised = 500, True

    def finish(self) -> None:
        """The body is closed: record the end, unless the response start did."""
        if self.keyed is not None:
            # Kept before the end is recorded: an ended operation whose key has
            # no response is one the reaper closed, whose key is free again.
            recorder = self.keyed.recorder
            recorder.close()
            kept = raised_response(self.environ, self.location) if self.raised else None
            self.middleware._keep(self.pending, self.keyed.key, kept or recorder.stored())
        if self.pending.written and not self.ended:
            self.ended = True
            self.middleware._end(self.environ, self.pending, self.status)


def _first_line(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
