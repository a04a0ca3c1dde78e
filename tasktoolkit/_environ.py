"""The WSGI environ keys the toolkit reads and sets, each defined once.

The public names are re-exported by :mod:`tasktoolkit.middleware`.
"""

from __future__ import annotations

#: This request's id, ``req-<uuid4>``.
REQUEST_ID_KEY = "tasktoolkit.request_id"
#: The valid inbound id, or ``None``.
GLOBAL_REQUEST_ID_KEY = "tasktoolkit.global_request_id"
#: The same ids under the keys oslo.context's ``RequestContext.from_environ`` reads.
OPENSTACK_REQUEST_ID_KEY = "openstack.request_id"
OPENSTACK_GLOBAL_REQUEST_ID_KEY = "openstack.global_request_id"
#: The id of the operation opened for this request (absent when none was).
OPERATION_ID_KEY = "tasktoolkit.operation_id"
#: The ``Operation-Location`` of the operation opened for this request, set by the
#: operation middleware; the request-id middleware's JSON 500 carries it.
OPERATION_LOCATION_KEY = "tasktoolkit.operation_location"
#: ``(resource_type, resource_id)`` of the one resource a request targets, set by the app.
OPERATION_TARGET_KEY = "tasktoolkit.operation_target"
#: Where Routes (and any wsgiorg router) publishes the route match.
ROUTING_ARGS_KEY = "wsgiorg.routing_args"
#: The :class:`~tasktoolkit.settings.Settings` the request is served with, set by the
#: request-id middleware (the ``Retry-After`` of a 503 comes from it).
SETTINGS_KEY = "tasktoolkit.settings"
