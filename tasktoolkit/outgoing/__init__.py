"""Outgoing calls carry the request id: the service called records it as its global request id.

While a request (or a job of a task it spawned) runs, a call it makes to
another OpenStack service should say which request it serves, in the
``X-OpenStack-Request-ID`` header, so the called service records it as the
*global request id* of its own request (and its operation: the toolkit reads
that header on every request). The id sent is the current request's own
global request id when it has one (the first id of the chain), else its
request id, as oslo.context's ``global_id`` says; outside a request or a job
nothing is sent. A header the caller sets itself is kept.

One hook per HTTP client, each imported only when used:

- keystoneauth: :class:`KeystoneSession`, a ``keystoneauth1.session.Session``
  (an ``Adapter`` over it sends the id too; an ``Adapter``'s own
  ``global_request_id`` wins);
- requests: :class:`RequestsSession`, a ``requests.Session``;
- httpx: :func:`httpx_event_hooks` (and :func:`async_httpx_event_hooks`),
  ``event_hooks`` for an ``httpx.Client`` (``AsyncClient``);
- anything else: :func:`request_id_headers`.

Example::

    session = KeystoneSession(auth=auth)
    compute = Adapter(session, service_type="compute")
    compute.post("/os-server-external-events", json=events)   # carries the id

    client = httpx.Client(event_hooks=httpx_event_hooks())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tasktoolkit.outgoing._ids import (
    REQUEST_ID_HEADER,
    async_httpx_event_hooks,
    httpx_event_hooks,
    outgoing_request_id,
    request_id_headers,
)

if TYPE_CHECKING:
    from tasktoolkit.outgoing._keystoneauth import KeystoneSession
    from tasktoolkit.outgoing._requests import RequestsSession

__all__ = [
    "REQUEST_ID_HEADER",
    "KeystoneSession",
    "RequestsSession",
    "async_httpx_event_hooks",
    "httpx_event_hooks",
    "outgoing_request_id",
    "request_id_headers",
]

#: The names whose client library is imported only when the name is.
_LAZY = {
    "KeystoneSession": "tasktoolkit.outgoing._keystoneauth",
    "RequestsSession": "tasktoolkit.outgoing._requests",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
