"""keystoneauth: a ``Session`` whose requests carry the id (imported only when used)."""

from __future__ import annotations

from typing import Any

import requests
from keystoneauth1 import session

from tasktoolkit.outgoing._ids import has_request_id, outgoing_request_id

__all__ = ["KeystoneSession"]


class KeystoneSession(session.Session):
    """A keystoneauth ``Session`` whose every request carries the current request's id as
    its ``global_request_id`` (keystoneauth's own ``X-OpenStack-Request-ID``).

    An id given explicitly wins: a request's ``global_request_id=``, an
    ``Adapter``'s ``global_request_id``, or the header itself.

    Example::

        session = KeystoneSession(auth=auth)
        Adapter(session, service_type="network").get("/v2.0/ports")
    """

    def request(  # type: ignore[override]  # every argument of the base passes through
        self, url: str, method: str, **kwargs: Any
    ) -> requests.Response:
        if kwargs.get("global_request_id") is None and not has_request_id(kwargs.get("headers")):
            kwargs["global_request_id"] = outgoing_request_id()
        return super().request(url, method, **kwargs)
