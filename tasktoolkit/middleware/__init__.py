"""WSGI middleware: request ids for every request, an operation for every mutating one.

A host gets both from its :class:`~tasktoolkit.Toolkit` (``toolkit.wsgi(app)``);
by hand, each takes the one :class:`~tasktoolkit.Settings`::

    from tasktoolkit.middleware import OperationMiddleware, RequestIdMiddleware

    operations = OperationMiddleware(app, engine=engine, settings=settings)
    app = RequestIdMiddleware(operations, settings=settings)

The ends of requests are written off their threads by the process's end
writer; :func:`flush_ends` writes what it holds (a server's worker-exit hook).
"""

from __future__ import annotations

from tasktoolkit._environ import (
    GLOBAL_REQUEST_ID_KEY,
    OPENSTACK_GLOBAL_REQUEST_ID_KEY,
    OPENSTACK_REQUEST_ID_KEY,
    OPERATION_ID_KEY,
    OPERATION_LOCATION_KEY,
    OPERATION_TARGET_KEY,
    REQUEST_ID_KEY,
)
from tasktoolkit.middleware._ends import flush_ends
from tasktoolkit.middleware._log import RequestIdLogFilter
from tasktoolkit.middleware._operations import (
    DEFAULT_METHODS,
    OperationMiddleware,
    set_operation_target,
)
from tasktoolkit.middleware._request_id import (
    OPENSTACK_HEADER,
    RequestIdMiddleware,
    fast_request_id,
)

__all__ = [
    "DEFAULT_METHODS",
    "GLOBAL_REQUEST_ID_KEY",
    "OPENSTACK_GLOBAL_REQUEST_ID_KEY",
    "OPENSTACK_HEADER",
    "OPENSTACK_REQUEST_ID_KEY",
    "OPERATION_ID_KEY",
    "OPERATION_LOCATION_KEY",
    "OPERATION_TARGET_KEY",
    "REQUEST_ID_KEY",
    "OperationMiddleware",
    "RequestIdLogFilter",
    "RequestIdMiddleware",
    "fast_request_id",
    "flush_ends",
    "set_operation_target",
]
