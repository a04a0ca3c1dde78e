"""requests: a ``Session`` whose requests carry the id (imported only when used)."""

from __future__ import annotations

import requests

from tasktoolkit.outgoing._ids import REQUEST_ID_HEADER, outgoing_request_id

__all__ = ["RequestsSession"]


class RequestsSession(requests.Session):
    """A ``requests.Session`` whose every request carries the current request's id in
    ``X-OpenStack-Request-ID`` (unless the request names one itself).

    Example::

        with RequestsSession() as session:
            session.post(f"{peer}/networks", json={"network": {"name": "n"}})
    """

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        prepared = super().prepare_request(request)
        request_id = outgoing_request_id()
        if request_id is not None and REQUEST_ID_HEADER not in prepared.headers:
            prepared.headers[REQUEST_ID_HEADER] = request_id
        return prepared
