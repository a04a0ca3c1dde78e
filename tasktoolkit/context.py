"""The request context: which request (and operation) the running code serves.

The request-id middleware binds a :class:`RequestContext` for the duration of a
request; the ORM reads it when a resource spawns tasks, so tasks are tied to the
request's operation without the host passing ids around. Outside a request
:func:`current` returns ``None`` and spawned tasks belong to no operation.

Example::

    with request_context(RequestContext(request_id=new_request_id())):
        port.spawn_task("dhcp_provisioning")
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from tasktoolkit._request_protocol import RequestOperation

__all__ = [
    "REQUEST_ID_PATTERN",
    "RequestContext",
    "bind",
    "current",
    "is_valid_request_id",
    "new_request_id",
    "request_context",
    "reset",
]

#: A request id as the toolkit makes them: ``req-`` and a lower-case uuid.
REQUEST_ID_PATTERN = re.compile(
    r"\Areq-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z"
)


class RequestContext(NamedTuple):
    """What the toolkit knows of the request being served.

    :param request_id: the local id, always generated here.
    :param global_request_id: a valid inbound id, kept for tracing only.
    :param project_id: the caller's project, used to scope records.
    :param user_id: the caller.
    :param operation_id: the id of the operation of this request, if it has
        one (the request id itself, under the operation middleware).
    :param operation: that operation as the request's protocol keeps it, which
        the ORM writes with the request's first spawn (and tells of its commit).

    Immutable, and cheap to make (one per request: a named tuple).
    """

    request_id: str
    global_request_id: str | None = None
    project_id: str | None = None
    user_id: str | None = None
    operation_id: str | None = None
    operation: RequestOperation | None = None

    def with_operation(self, operation_id: str | None) -> RequestContext:
        """A copy of this context with ``operation_id`` set."""
        return self._replace(operation_id=operation_id)


_current: ContextVar[RequestContext | None] = ContextVar("tasktoolkit.request", default=None)


def new_request_id() -> str:
    """A fresh request id, ``req-<uuid4>``."""
    return f"req-{uuid.uuid4()}"


def is_valid_request_id(value: object) -> bool:
    """Whether ``value`` is a well-formed request id (and nothing more)."""
    return isinstance(value, str) and REQUEST_ID_PATTERN.match(value) is not None


def current() -> RequestContext | None:
    """The context of the request being served, or ``None`` outside a request."""
    return _current.get()


def bind(context: RequestContext | None) -> Token[RequestContext | None]:
    """Make ``context`` current; pass the returned token to :func:`reset`."""
    return _current.set(context)


def reset(token: Token[RequestContext | None]) -> None:
    """Restore the context that was current before :func:`bind`."""
    _current.reset(token)


@contextmanager
def request_context(context: RequestContext | None) -> Iterator[RequestContext | None]:
    """Bind ``context`` for the ``with`` block, restoring the previous one after."""
    token = bind(context)
    try:
        yield context
    finally:
        reset(token)
