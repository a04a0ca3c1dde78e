"""One operation per mutating request: the WSGI adapter over the request's operation protocol.

For a ``POST``, ``PUT``, ``PATCH`` or ``DELETE`` (the settings' ``methods``)
the request gets an operation keyed by its request id, and the response an
``Operation-Location``. The rules (what is written when, what is kept) are the
protocol's, :mod:`tasktoolkit._request_protocol`, which does no I/O; this
module feeds it the WSGI events (the call, ``start_response``, the body's
chunks, its ``close()``, an exception) and does the I/O it asks for:

- the app's first spawn writes the operation in the app's own transaction
  (the ORM, through the context), so no statement runs before the response
  starts; once the body is closed its end goes to the process's
  :class:`~tasktoolkit.middleware._ends.EndWriter`, off the request's thread;
- a request that spawned nothing gets its operation, already finished, in
  one statement when its response starts (unless the app answered 503);
- a request with an ``Idempotency-Key`` has its operation and its key written
  in one transaction before the app runs (if the app serves its path and
  method: else it is answered as without a key), its response kept on the key
  before the last byte of its body goes out, and a repeat replayed without
  calling the app; a 4xx the app answered before doing anything frees the key.

When the database cannot take a write, the one outage policy of the hooks
(:meth:`Hooks.unavailable <tasktoolkit.hooks.Hooks.unavailable>`) logs it:
the response goes out without ``Operation-Location``, or a keyed request is a
``503``, and an unrecorded end is the reaper's.

An ASGI adapter would be a second thin one over the same protocol: it would
feed the same events from ``http.response.start`` and ``http.response.body``
(``more_body`` false: the last chunk, before which a keyed response is kept),
read the body from ``receive`` for the fingerprint, run the few statements in
a thread (or an async engine), and hand the end to the same writer.

It must sit inside :class:`~tasktoolkit.middleware.RequestIdMiddleware`::

    app = RequestIdMiddleware(OperationMiddleware(app, engine=engine, settings=s), settings=s)

(``Toolkit(engine, s).wsgi(app)`` makes both.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from tasktoolkit._checks import storable
from tasktoolkit._environ import (
    OPERATION_ID_KEY,
    OPERATION_LOCATION_KEY,
    OPERATION_TARGET_KEY,
    REQUEST_ID_KEY,
    ROUTING_ARGS_KEY,
)
from tasktoolkit._request_protocol import (
    OperationFields,
    RequestOperation,
    RequestProtocol,
    Step,
    StoredResponse,
    Target,
)
from tasktoolkit.caller import check_caller
from tasktoolkit.context import RequestContext, bind, current, reset
from tasktoolkit.errors import (
    ApplicationError,
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidCallerError,
    TaskToolkitError,
)
from tasktoolkit.http_errors import JSON_CONTENT_TYPE, error_body, request_id_of, response_for
from tasktoolkit.middleware._ends import EndWriter
from tasktoolkit.middleware._idempotency import fingerprint, idempotency_key, replay
from tasktoolkit.middleware._iter import ClosingIterator
from tasktoolkit.middleware._paste import settings_for
from tasktoolkit.middleware._request_id import opens_operation
from tasktoolkit.orm._deadline import deadline
from tasktoolkit.orm._engine import autocommit_engine, prepare_engine, read_committed
from tasktoolkit.orm._idempotency import free_key, record_response, reserve
from tasktoolkit.orm._operations import end_request, write_finished
from tasktoolkit.orm._retry import retrying
from tasktoolkit.settings import DEFAULT_METHODS, Settings, settings_or_default
from tasktoolkit.signals import OperationChange

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["DEFAULT_METHODS", "OperationMiddleware", "set_operation_target"]

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


def _target(environ: WSGIEnvironment) -> Target:
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


class OperationMiddleware:
    """Write an operation for every mutating request and finish it from the response.

    :param engine: the database the operations go to (the app's own: its pool).
    :param settings: every knob (``methods``, ``exclude_paths``,
        ``caller_getter``, ``operation_ttl``, ``request_timeout``,
        ``path_prefix`` and ``base_url`` for ``Operation-Location``,
        ``durable``, ``deadline``, ``retry_after``, ``hooks``); the defaults'
        when not given. ``durable`` off (the default) commits the middleware's
        own writes with ``synchronous_commit = off`` on PostgreSQL: until the
        end of a request is on disk the operation reads ``running``, and a
        crash before that leaves it to the reaper. No effect on SQLite and
        MariaDB, whose commit durability is not a per-connection choice.
    """

    def __init__(
        self, app: WSGIApplication, *, engine: Engine, settings: Settings | None = None
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI application, got {app!r}")
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be a SQLAlchemy Engine, got {engine!r}")
        settings = settings_or_default(settings)
        self.app = app
        self.settings = settings
        self.engine = prepare_engine(engine)
        self.hooks = settings.hooks
        self.methods = frozenset(settings.methods)
        self.operations_path = f"{settings.path_prefix}/operations"
        ttl = settings.operation_ttl
        self._ttl_seconds = None if ttl is None else int(ttl.total_seconds())
        self._retry_after = str(int(settings.retry_after.total_seconds()))
        self._deadline = settings.deadline_seconds
        self._writer, self._owns_writer = autocommit_engine(
            self.engine, durable=settings.durable, deadline=self._deadline
        )
        # Keyed requests write their operation and key in one transaction.
        self._keys = read_committed(self.engine)
        #: The process's writer of this middleware's request ends.
        self.ends = EndWriter(
            self.engine, durable=settings.durable, deadline=self._deadline, hooks=self.hooks
        )

    @classmethod
    def factory(
        cls, global_conf: Mapping[str, str], **local_conf: str
    ) -> Callable[[WSGIApplication], OperationMiddleware]:
        """``paste.filter_factory``: ``toolkit = package.module:attribute`` names the host's
        :class:`~tasktoolkit.Toolkit` (its engine and settings), and the toolkit's
        options (``exclude_paths``, ``deadline``, ...) change its settings for this filter.
        ``global_conf`` is not read.
        """
        toolkit, settings = settings_for(local_conf)
        if toolkit is None:
            raise ConfigurationError(
                "operations filter: set toolkit = package.module:attribute (the host's Toolkit)"
            )
        engine = toolkit.engine

        def filter_(app: WSGIApplication) -> OperationMiddleware:
            return cls(app, engine=engine, settings=settings)

        return filter_

    def close(self) -> None:
        """Write the request ends held, then close the middleware's own connections
        (not the app's engine)."""
        self.ends.close()
        if self._owns_writer:
            self._writer.dispose()

    def flush_ends(self, timeout: float | None = None) -> bool:
        """Wait until every request end handed to the writer so far is written."""
        return self.ends.flush(timeout)

    def _location(self, environ: WSGIEnvironment, request_id: str) -> str:
        base = self.settings.base_url
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

    # -- I/O the protocol asks for -----------------------------------------------

    def _write(self, work: Callable[[Connection], _R]) -> _R:
        """``work`` on one of the middleware's own (AUTOCOMMIT) connections, within the deadline."""
        with deadline(self._deadline):  # one deadline for both tries
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

    def _degrade(self, where: str, exc: Exception, doing: str) -> None:
        """The one outage policy (the hooks'); any other error is raised."""
        if not self.hooks.unavailable(where, exc, doing=doing):
            raise exc

    def _reserve(self, environ: WSGIEnvironment, protocol: RequestProtocol, key: str) -> Any:
        """Write the operation and reserve its key in one transaction; the replay to send,
        or ``None`` to run the app."""
        digest = fingerprint(environ)
        fields = protocol.operation.fields
        ttl, timeout = self.settings.operation_ttl, self.settings.request_timeout

        def transaction() -> OperationChange | StoredResponse:
            with self._keys.connect() as connection, connection.begin() as outer:
                outcome = reserve(
                    connection,
                    fields,
                    key=key,
                    fingerprint=digest,
                    ttl=ttl,
                    request_timeout=timeout,
                )
                if isinstance(outcome, StoredResponse):
                    outer.rollback()  # a replay writes no operation
                return outcome

        with deadline(self._deadline):
            outcome = retrying(transaction)
        self.hooks.available("middleware.reserve")
        if isinstance(outcome, StoredResponse):
            return outcome
        protocol.reserved()
        return None

    def _write_finished(self, environ: WSGIEnvironment, protocol: RequestProtocol) -> None:
        """Write the operation of a request that spawned nothing, finished (one statement)."""
        target = _target(environ)
        try:
            change = self._write(
                lambda c: write_finished(c, protocol.operation, protocol.status, target=target)
            )
        except Exception as exc:  # the database's errors, SQLAlchemy's or oslo.db's
            operation_id = protocol.operation.fields.id
            self._degrade("middleware.finished", exc, f"operation {operation_id} not written")
            protocol.wrote_finished(None, written=False)
            return
        self.hooks.available("middleware.finished")
        protocol.wrote_finished(change, written=True)

    def _free_key(self, environ: WSGIEnvironment, protocol: RequestProtocol, key: str) -> None:
        """A keyed request refused before it did anything: free its key and finish its
        operation with the status, in one transaction."""
        fields, target = protocol.operation.fields, _target(environ)

        def transaction() -> OperationChange | None:
            with self._keys.begin() as connection:
                free_key(connection, project_id=fields.project_id, key=key, operation_id=fields.id)
                return end_request(
                    connection,
                    fields.id,
                    protocol.status,
                    target=target,
                )

        try:
            with deadline(self._deadline):
                change = retrying(transaction)
        except Exception as exc:  # the database's errors, SQLAlchemy's or oslo.db's
            self._degrade("middleware.free_key", exc, f"the key of operation {fields.id}")
            protocol.wrote_finished(None, written=False)
            return
        self.hooks.available("middleware.free_key")
        protocol.wrote_finished(change, written=True)

    def _keep(self, protocol: RequestProtocol, key: str, response: StoredResponse) -> None:
        """Keep a keyed request's response for its replays (before its end is recorded)."""
        fields = protocol.operation.fields
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
            self._degrade("middleware.keep", exc, f"the response of operation {fields.id}")
            return
        self.hooks.available("middleware.keep")

    # -- WSGI ------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not opens_operation(self.settings, environ):
            return self.app(environ, start_response)
        ctx = current()
        request_id = environ.get(REQUEST_ID_KEY)
        if ctx is None or request_id is None or ctx.request_id != request_id:
            raise RuntimeError("OperationMiddleware must be wrapped by RequestIdMiddleware")
        try:
            caller = check_caller(self.settings.caller_getter(environ))
        except InvalidCallerError as error:
            # Refused before the app runs, with no operation: ids are never cut.
            return _answer(environ, start_response, error)
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        fields = OperationFields(
            id=request_id,
            method=environ["REQUEST_METHOD"],
            path=_clean(_decoded(path), 2048) or "/",
            global_request_id=ctx.global_request_id,
            project_id=caller.project_id,
            user_id=caller.user_id,
        )
        operation = RequestOperation(
            fields,
            ttl_seconds=self._ttl_seconds,
            request_timeout=self.settings.request_timeout,
            hooks=self.hooks,
        )
        try:
            key = idempotency_key(environ)
        except TaskToolkitError as error:
            return _answer(environ, start_response, error)
        if key is not None and not _served(self.app, environ):
            key = None  # answered as without a key: the app's 404 or 405
        protocol = RequestProtocol(
            operation,
            location=self._location(environ, request_id),
            retry_after=self._retry_after,
            keyed=key is not None,
        )
        if key is not None:
            try:
                stored = self._reserve(environ, protocol, key)
            except TaskToolkitError as error:  # a bad body, a key in use or reused
                return _answer(environ, start_response, error)
            except Exception as exc:  # the database's errors, SQLAlchemy's or oslo.db's
                self._degrade("middleware.reserve", exc, f"keyed request {request_id} refused")
                return _answer(environ, start_response, DatabaseUnavailableError())
            if stored is not None:
                return replay(stored, start_response)
        environ[OPERATION_ID_KEY] = request_id
        return _Request(self, environ, protocol, key).run(ctx, start_response)


def _served(app: WSGIApplication, environ: WSGIEnvironment) -> bool:
    """Whether ``app`` serves the request's path and method, as far as it can tell.

    An app with a ``serves(environ)`` method (the toolkit's
    :class:`~tasktoolkit.endpoints.Router`) is asked; any other is taken to serve
    it. A keyed request the app does not serve reserves no key: as Stripe routes
    before it looks at a key, its 404 or 405 is the answer, never a 422 for a key
    sent before with another request.
    """
    serves = getattr(app, "serves", None)
    return bool(serves(environ)) if callable(serves) else True


def _answer(
    environ: WSGIEnvironment, start_response: StartResponse, error: TaskToolkitError
) -> Iterable[bytes]:
    return response_for(environ, error)(environ, start_response)  # type: ignore[no-any-return]


class _Request:
    """One request under the middleware: the WSGI events fed to its protocol.

    Per-request state lives here and in the protocol, never on the middleware.
    """

    __slots__ = ("environ", "key", "middleware", "protocol")

    def __init__(
        self,
        middleware: OperationMiddleware,
        environ: WSGIEnvironment,
        protocol: RequestProtocol,
        key: str | None,
    ) -> None:
        self.middleware = middleware
        self.environ = environ
        self.protocol = protocol
        self.key = key

    def run(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        protocol = self.protocol
        fields = protocol.operation.fields
        token = bind(
            ctx._replace(
                operation_id=fields.id,
                project_id=fields.project_id,
                user_id=fields.user_id,
                operation=protocol.operation,
            )
        )

        def start(
            status_line: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Any:
            self.started(status_line)
            write = start_response(status_line, protocol.headers(headers), exc_info)
            if self.key is None:
                return write

            def noted(chunk: bytes) -> object:
                protocol.body(chunk)
                return write(chunk)

            return noted

        def finish() -> None:
            try:
                self.finish()
            finally:
                reset(token)

        try:
            result = self.middleware.app(self.environ, start)
        except BaseException:
            protocol.app_raised()
            self.started("500 Internal Server Error")
            finish()
            raise
        # Wrapped even when it is a list: the end is handed over once the
        # server has sent the body.
        body = result if self.key is None else self.kept_before_last(result)
        return ClosingIterator(body, finish, self.failed)

    def started(self, status_line: str) -> None:
        """The response starts: do what the protocol asks before it goes out."""
        protocol, middleware = self.protocol, self.middleware
        step = protocol.response_started(status_line)
        if step is Step.WRITE_FINISHED:
            middleware._write_finished(self.environ, protocol)
        elif step is Step.FREE_KEY and self.key is not None:
            middleware._free_key(self.environ, protocol, self.key)
        if protocol.located:
            # For the request-id middleware's 500, should the app raise now.
            self.environ[OPERATION_LOCATION_KEY] = protocol.location

    def kept_before_last(self, body: Iterable[bytes]) -> Iterable[bytes]:
        """A keyed response's body, its response kept before its last chunk goes out."""
        if type(body) is list or type(body) is tuple:
            for chunk in body:  # all there: kept before any of it goes out
                self.protocol.body(chunk)
            self.body_complete()
            return body
        return _KeptBeforeLast(body, self.protocol, self.body_complete)

    def body_complete(self) -> None:
        stored = self.protocol.body_complete()
        if stored is not None and self.key is not None:
            self.middleware._keep(self.protocol, self.key, stored)

    def failed(self, exc: BaseException, sent: bool) -> None:
        """Producing the body raised: the request ended in an error (the error goes on)."""
        self.protocol.app_raised()

    def finish(self) -> None:
        """The body is closed: keep what is still to keep, hand the end to the writer."""
        protocol = self.protocol
        keep, end = protocol.body_closed(_target(self.environ))
        if keep and self.key is not None:
            stored = self.raised_response() if protocol.raised else protocol.stored()
            self.middleware._keep(protocol, self.key, stored)
        if end is not None:
            self.middleware.ends.submit(end)

    def raised_response(self) -> StoredResponse:
        """The contract's 500 the request-id middleware answered, as its replay sends it."""
        error = ApplicationError("the server failed to answer; the error is logged with this id")
        body = error_body(
            status=error.status,
            code=error.code,
            detail=str(error),
            request_id=request_id_of(self.environ),
        )
        return self.protocol.raised_response(body, JSON_CONTENT_TYPE)


class _KeptBeforeLast:
    """A keyed response's body passed through, one chunk held back while it may be the
    last: when the body ends, the response is kept before that chunk goes out."""

    __slots__ = ("_done", "_held", "_iterable", "_iterator", "_on_complete", "_protocol")

    def __init__(
        self, iterable: Iterable[bytes], protocol: RequestProtocol, on_complete: Callable[[], None]
    ) -> None:
        self._iterable = iterable
        self._iterator: Iterator[bytes] | None = None
        self._protocol = protocol
        self._on_complete = on_complete
        self._held: bytes | None = None
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def _pull(self) -> bytes | None:
        if self._iterator is None:
            self._iterator = iter(self._iterable)
        try:
            chunk = next(self._iterator)
        except StopIteration:
            return None
        self._protocol.body(chunk)
        return chunk

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        held, self._held = self._held, None
        if held is None:
            held = self._pull()
            if held is None:
                self._done = True
                self._on_complete()
                raise StopIteration
        if not self._protocol.keeps_early:
            return held  # over the replay limit: kept when the body is closed
        after = self._pull()
        if after is None:
            self._done = True
            self._on_complete()  # before the last chunk goes out
        else:
            self._held = after
        return held

    def close(self) -> None:
        close = getattr(self._iterable, "close", None)
        if close is not None:
            close()
