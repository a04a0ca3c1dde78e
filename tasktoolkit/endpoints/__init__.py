"""The HTTP endpoints: a resource's tasks, all tasks, operations; mounted on a Routes mapper.

Example::

    import routes
    from tasktoolkit.endpoints import Router, mount

    mapper = routes.Mapper()
    mapper.connect("/ports", controller=ports_app, action="index")   # the host's own
    mount(mapper, collections={"ports": Port}, session_factory=Session)
    app = RequestIdMiddleware(OperationMiddleware(Router(mapper), engine=engine))

Then ``GET /ports/<id>/tasks``, ``GET /tasks?state=running``,
``GET /operations/<request_id>`` and ``POST /ports/<id>/tasks/<task_id>/cancel``
answer as ``docs/api.md`` describes; :func:`openapi_document` describes them.
"""

from __future__ import annotations

from tasktoolkit.endpoints._app import (
    ResourceVisibility,
    TaskEndpoints,
    canonical_resource_id,
    resource_visible,
)
from tasktoolkit.endpoints._openapi import openapi_document
from tasktoolkit.endpoints._routing import Router, mount

__all__ = [
    "ResourceVisibility",
    "Router",
    "TaskEndpoints",
    "canonical_resource_id",
    "mount",
    "openapi_document",
    "resource_visible",
]
