"""The request's operation protocol, without I/O: what a mutating request opens, keeps, writes
and ends.

A server adapter (the WSGI middleware, :mod:`tasktoolkit.middleware`) makes a
:class:`RequestProtocol` per mutating request, feeds it the request's events
and does what it answers; the protocol itself reads no socket, sends no
statement and knows no server interface, so its rules are the same under
any adapter and are tested without one:

=====================================  ================================================
event                                  what the adapter does with the answer
=====================================  ================================================
request began (``RequestProtocol()``)  a keyed request reserves its key first (the
                                       operation is written with it: :meth:`reserved`)
the app's spawn committed              nothing: the ORM feeds :class:`RequestOperation`
                                       (its first spawn wrote the operation)
response started                       :meth:`response_started` says whether to write
                                       the operation finished now, or to free the key;
                                       :meth:`headers` adds ``Operation-Location`` and
                                       the ``Retry-After`` of a ``202``
body bytes, body complete              a keyed response is kept before its last byte
                                       goes out (:meth:`body_complete`)
app raised                             :meth:`app_raised`: the request ends in a 500
body closed                            :meth:`body_closed`: the response to keep (if
                                       not kept yet) and the :class:`RequestEnd` to
                                       hand to the end writer
=====================================  ================================================

Announcing an operation's change (the ``operation_opened`` and
``operation_finished`` signals and the hooks' ``operation_changed``) is done in
one place, :func:`announce`, after the change is committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import NamedTuple

from tasktoolkit import signals
from tasktoolkit.hooks import Hooks
from tasktoolkit.signals import OperationChange

__all__ = [
    "MAX_REPLAYED_BODY",
    "REPLAYED_HEADERS",
    "OperationFields",
    "RequestEnd",
    "RequestOperation",
    "RequestProtocol",
    "Step",
    "StoredResponse",
    "Target",
    "announce",
]

#: The largest response body kept for a replay.
MAX_REPLAYED_BODY = 1024 * 1024
#: The response headers a replay carries (besides the request id).
REPLAYED_HEADERS = ("Operation-Location", "Location", "Content-Type")
_REPLAYED = frozenset(name.lower() for name in REPLAYED_HEADERS)
#: An app that answers 503 did nothing it could record (its database is away,
#: most likely): its request gets no operation, rather than another wait on the
#: database before the client has the answer.
_UNAVAILABLE = 503
_RUNNING = "running"


@dataclass(frozen=True, slots=True)
class OperationFields:
    """What is known of an operation when its request starts."""

    id: str
    method: str
    path: str
    global_request_id: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    project_id: str | None = None
    user_id: str | None = None


class Target(NamedTuple):
    """What a request did, known once it has been routed and answered.

    :param action: the route's action.
    :param resource_type: with ``resource_id``, the one resource the request
        targeted; one without the other is dropped.
    """

    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None

    def cleaned(self) -> Target:
        """Each value cut to its column (64), and a resource only with both halves."""
        action, kind, ident = (None if v is None else v[:64] for v in self)
        return (
            Target(action, None, None)
            if kind is None or ident is None
            else Target(action, kind, ident)
        )


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The response a keyed request is replayed with.

    :param body: ``None`` when it was too large to keep (only the status and
        headers are replayed).
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes | None


@dataclass(frozen=True, slots=True)
class RequestEnd:
    """The end of a request whose operation is written: what the end writer records."""

    operation_id: str
    http_status: int
    target: Target
    #: How long the operation is kept once finished (``None`` keeps it).
    ttl_seconds: int | None


def announce(hooks: Hooks, change: OperationChange) -> None:
    """Tell the signals' receivers and the hooks of a committed change of an operation:
    opened (``running``) or finished. The one place that does."""
    opened = change.state == _RUNNING
    signals.send(signals.operation_opened if opened else signals.operation_finished, change)
    if hooks:
        hooks.operation_changed(change)


class RequestOperation:
    """The operation of the request being served, as the ORM's spawn writes it.

    The request's first spawn writes it in the app's own transaction (the ORM's
    ``open_or_count``), so the operation commits with what the request created
    or not at all; the ORM tells it of each such commit
    (:meth:`spawn_committed`). Bound to the request's context by the adapter.

    :param ttl_seconds: how long it is kept once finished; ``None`` keeps it.
    :param request_timeout: when written ``running``, its request has this long
        to record its end before the reaper ends it.
    """

    __slots__ = ("fields", "hooks", "request_timeout", "spawned", "ttl_seconds", "written")

    def __init__(
        self,
        fields: OperationFields,
        *,
        ttl_seconds: int | None,
        request_timeout: timedelta,
        hooks: Hooks,
    ) -> None:
        self.fields = fields
        self.ttl_seconds = ttl_seconds
        self.request_timeout = request_timeout
        self.hooks = hooks
        #: The operation's row is committed (by a spawn, a reservation or its finish).
        self.written = False
        #: A transaction of the request that spawned tasks committed.
        self.spawned = False

    def opened(self) -> OperationChange:
        """The change that announces this operation opened."""
        fields = self.fields
        return OperationChange(fields.id, _RUNNING, None, fields.method, fields.path)

    def spawn_committed(self) -> None:
        """Event: a transaction of the request that spawned tasks committed (the ORM's)."""
        self.spawned = True
        if not self.written:  # else a keyed request's, written before its app ran
            self.written = True
            announce(self.hooks, self.opened())


class Step(Enum):
    """What the adapter does as the response starts (:meth:`RequestProtocol.response_started`)."""

    #: Nothing: the operation is written (a spawn, a reservation), or gets none.
    NOTHING = "nothing"
    #: Write the operation, already finished, with the status (one statement).
    WRITE_FINISHED = "write_finished"
    #: A keyed request the app refused with a 4xx before doing anything: free
    #: its key and finish its operation (one transaction); nothing is kept.
    FREE_KEY = "free_key"


class _Recorder:
    """What a replay of the response needs, never the whole of a large body."""

    __slots__ = ("chunks", "headers", "size", "status")

    def __init__(self) -> None:
        self.status = 500
        self.headers: tuple[tuple[str, str], ...] = ()
        self.chunks: list[bytes] = []
        self.size = 0

    def stored(self) -> StoredResponse:
        body = None if self.size > MAX_REPLAYED_BODY else b"".join(self.chunks)
        return StoredResponse(self.status, self.headers, body)


class RequestProtocol:
    """One mutating request's operation, fed the request's events; says what to write.

    :param operation: the request's operation (bound to its context for the ORM).
    :param location: its ``Operation-Location``.
    :param retry_after: the ``Retry-After`` of a ``202`` whose request spawned tasks.
    :param keyed: the request carries an ``Idempotency-Key`` (reserved before the app).
    """

    __slots__ = (
        "_recorder",
        "ended",
        "kept",
        "location",
        "operation",
        "raised",
        "retry_after",
        "status",
    )

    def __init__(
        self, operation: RequestOperation, *, location: str, retry_after: str, keyed: bool = False
    ) -> None:
        self.operation = operation
        self.location = location
        self.retry_after = retry_after
        self.status = 500
        #: The app raised (its response is the contract's 500).
        self.raised = False
        #: The end of the request is recorded (the operation written finished, or its key freed).
        self.ended = False
        #: The keyed response is kept (or must never be: its key was freed).
        self.kept = not keyed
        self._recorder = _Recorder() if keyed else None

    @property
    def keyed(self) -> bool:
        """Whether the request carries an ``Idempotency-Key``."""
        return self._recorder is not None

    @property
    def located(self) -> bool:
        """Whether the operation exists (or will, once its request ends): ``Operation-Location``."""
        return self.operation.written or self.ended

    # -- events --------------------------------------------------------------

    def reserved(self) -> None:
        """The operation and its key were written before the app runs (a keyed request)."""
        self.operation.written = True
        announce(self.operation.hooks, self.operation.opened())

    def response_started(self, status_line: str) -> Step:
        """The app starts its response: what to write before it goes out."""
        self.status = _status(status_line)
        if self.ended:
            return Step.NOTHING
        operation = self.operation
        if self.keyed and not operation.spawned and 400 <= self.status < 500:
            # As Stripe does: a request refused before it did anything (a 400
            # the client fixes, a 404, a 405) keeps no result; the key is free.
            return Step.FREE_KEY
        if not operation.written and self.status != _UNAVAILABLE:
            return Step.WRITE_FINISHED
        return Step.NOTHING

    def wrote_finished(self, change: OperationChange | None, *, written: bool) -> None:
        """The adapter did the step; ``written``: it succeeded (``change``: the finish, if
        that statement finished the operation), which is then announced."""
        if not written:
            return
        self.ended = True
        if self._recorder is not None and not self.operation.spawned and 400 <= self.status < 500:
            self.kept = True  # its key was freed: nothing to keep
        if not self.operation.written:
            self.operation.written = True
            announce(self.operation.hooks, self.operation.opened())
        if change is not None:
            announce(self.operation.hooks, change)

    def headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The response's headers with ``Operation-Location`` and a ``202``'s ``Retry-After``
        (unless the app set them); a keyed request notes what its replay carries."""
        names = {name.lower() for name, _ in headers}
        if self.located and "operation-location" not in names:
            headers = [*headers, ("Operation-Location", self.location)]
        if self.status == 202 and self.operation.spawned and "retry-after" not in names:
            headers = [*headers, ("Retry-After", self.retry_after)]
        recorder = self._recorder
        if recorder is not None:
            recorder.status = self.status
            recorder.headers = tuple((n, v) for n, v in headers if n.lower() in _REPLAYED)
            recorder.chunks, recorder.size = [], 0
        return headers

    def body(self, chunk: bytes) -> None:
        """Body bytes go out (a keyed request keeps them while within the replay limit)."""
        recorder = self._recorder
        if recorder is None or self.kept:
            return
        recorder.size += len(chunk)
        if recorder.size <= MAX_REPLAYED_BODY:
            recorder.chunks.append(bytes(chunk))
        else:
            recorder.chunks = []

    @property
    def keeps_early(self) -> bool:
        """Whether the response is still to be kept before its last byte goes out
        (a keyed response within the replay limit)."""
        recorder = self._recorder
        return recorder is not None and not self.kept and recorder.size <= MAX_REPLAYED_BODY

    def body_complete(self) -> StoredResponse | None:
        """Every byte of the body is produced, the last not yet sent: the response to keep
        now, so that a client that read it all and retries gets the replay."""
        if self._recorder is None or self.kept or self.raised:
            return None
        self.kept = True
        return self._recorder.stored()

    def app_raised(self) -> None:
        """The app raised, before or while producing its body: the request ends in a 500."""
        self.status, self.raised = 500, True

    def raised_response(self, body: bytes, content_type: str) -> StoredResponse:
        """The replay of a request whose app raised: the contract's 500 (``body``), as its
        operation says."""
        headers = (("Content-Type", content_type), ("Operation-Location", self.location))
        return StoredResponse(500, headers, body)

    def body_closed(self, target: Target) -> tuple[bool, RequestEnd | None]:
        """The body is closed: whether the response is still to be kept (before the end),
        and the end to hand to the end writer (``None``: recorded already, or nothing to end)."""
        keep = not self.kept
        self.kept = True
        if not self.operation.written or self.ended:
            return keep, None
        self.ended = True
        return keep, RequestEnd(
            self.operation.fields.id, self.status, target.cleaned(), self.operation.ttl_seconds
        )

    def stored(self) -> StoredResponse:
        """The response as its replay sends it."""
        if self._recorder is None:
            raise RuntimeError("not a keyed request")
        return self._recorder.stored()


def _status(status_line: str) -> int:
    try:
        return int(status_line[:3])
    except ValueError:
        return 500
