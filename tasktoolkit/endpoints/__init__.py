"""The HTTP endpoints: a resource's tasks, all tasks, operations; mounted on a Routes mapper.

Each endpoint is declared once, in a table (path, methods, handler, policy
rules, what the OpenAPI document says of it), from which the routes, the
dispatch, the document and the policy defaults are made. Handlers answer data
(the documents of :mod:`tasktoolkit.views`); the representation is applied in
one place.

Example::

    import routes
    from tasktoolkit import Settings, Toolkit
    from tasktoolkit.endpoints import Router

    toolkit = Toolkit(engine, Settings(serve_openapi=True))
    mapper = routes.Mapper()
    mapper.connect("/ports", controller=ports_app, action="index")   # the host's own
    toolkit.mount(mapper, collections={"ports": Port})
    app = toolkit.wsgi(Router(mapper))

Then ``GET /ports/<id>/tasks``, ``GET /tasks?state=running``,
``GET /operations/<request_id>`` and ``POST /ports/<id>/tasks/<task_id>/cancel``
answer as ``docs/api.md`` describes; :func:`openapi_document` describes them.
"""

from __future__ import annotations

from tasktoolkit.endpoints._app import TaskEndpoints
from tasktoolkit.endpoints._openapi import openapi_document
from tasktoolkit.endpoints._routing import Router, mount
from tasktoolkit.endpoints._table import ENDPOINTS, Endpoint
from tasktoolkit.endpoints._visibility import (
    ResourceVisibility,
    canonical_resource_id,
    resource_visible,
)

__all__ = [
    "ENDPOINTS",
    "Endpoint",
    "ResourceVisibility",
    "Router",
    "TaskEndpoints",
    "canonical_resource_id",
    "mount",
    "openapi_document",
    "resource_visible",
]
