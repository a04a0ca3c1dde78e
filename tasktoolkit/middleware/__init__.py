"""WSGI middleware: request ids for every request, an operation for every mutating one.

Example::

    from tasktoolkit.middleware import OperationMiddleware, RequestIdMiddleware

    app = RequestIdMiddleware(OperationMiddleware(app, engine=engine))
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
    "set_operation_target",
]
