"""The id an outgoing call carries, and the hooks that need no client library imported."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from tasktoolkit.context import current
from tasktoolkit.middleware import OPENSTACK_HEADER

if TYPE_CHECKING:
    import httpx

__all__ = [
    "REQUEST_ID_HEADER",
    "async_httpx_event_hooks",
    "has_request_id",
    "httpx_event_hooks",
    "outgoing_request_id",
    "request_id_headers",
]

#: The header an outgoing call carries the id in (OpenStack's).
REQUEST_ID_HEADER = OPENSTACK_HEADER
_LOWER = REQUEST_ID_HEADER.lower()


def outgoing_request_id() -> str | None:
    """The id the current request (or job) sends on: its global request id when it has
    one, else its own request id; ``None`` outside a request or a job."""
    ctx = current()
    if ctx is None:
        return None
    return ctx.global_request_id or ctx.request_id


def request_id_headers() -> dict[str, str]:
    """``{"X-OpenStack-Request-ID": <id>}`` for the current request (or job), else ``{}``.

    Example::

        urllib.request.Request(url, headers={**request_id_headers(), "Accept": "..."})
    """
    request_id = outgoing_request_id()
    return {} if request_id is None else {REQUEST_ID_HEADER: request_id}


def has_request_id(headers: object) -> bool:
    """Whether ``headers`` (a mapping, any case) already names a request id."""
    keys = getattr(headers, "keys", None)
    return keys is not None and any(str(name).lower() == _LOWER for name in keys())


def _add_to_httpx(request: httpx.Request) -> None:
    request_id = outgoing_request_id()
    if request_id is not None and REQUEST_ID_HEADER not in request.headers:
        request.headers[REQUEST_ID_HEADER] = request_id


async def _add_to_httpx_async(request: httpx.Request) -> None:
    _add_to_httpx(request)


def httpx_event_hooks() -> dict[str, list[Callable[[httpx.Request], None]]]:
    """``event_hooks`` for an ``httpx.Client`` whose requests carry the id.

    Example::

        client = httpx.Client(base_url=url, event_hooks=httpx_event_hooks())
    """
    return {"request": [_add_to_httpx]}


def async_httpx_event_hooks() -> dict[
    str, list[Callable[[httpx.Request], Coroutine[Any, Any, None]]]
]:
    """``event_hooks`` for an ``httpx.AsyncClient`` (its hooks are coroutines)."""
    return {"request": [_add_to_httpx_async]}
