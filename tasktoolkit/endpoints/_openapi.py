"""The OpenAPI 3.1 document of the endpoints, shipped as ``openapi.json``.

The shipped document describes a resource's task endpoints once, under
``/{collection}/{resource_id}/...``; :func:`openapi_document` expands them for
the collections a host mounts, under its path prefix.

Example::

    document = openapi_document(collections=["ports", "networks"], path_prefix="/v2.0")
    document["paths"]["/v2.0/ports/{resource_id}/tasks"]["get"]
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from importlib import resources
from typing import Any

__all__ = ["load_document", "openapi_document"]

_GENERIC = "/{collection}/"
_COLLECTION_PARAMETER = {"$ref": "#/components/parameters/collection"}


def load_document() -> dict[str, Any]:
    """The shipped document, as it is (generic collection paths)."""
    text = resources.files("tasktoolkit.endpoints").joinpath("openapi.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def openapi_document(
    *,
    collections: Iterable[str] | None = None,
    path_prefix: str = "",
    resource_types: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The document for a host: one set of resource paths per collection, under ``path_prefix``.

    :param collections: the mounted collection names; ``None`` keeps the generic
        ``/{collection}/...`` paths.
    :param path_prefix: the prefix given to :func:`~tasktoolkit.endpoints.mount`.
    :param resource_types: the resource types the host declares: ``/tasks`` takes
        no other ``resource_type``. ``None`` leaves it at the pattern.
    """
    document = load_document()
    if resource_types is not None:
        schema = document["components"]["parameters"]["resource_type"]["schema"]
        schema["enum"] = sorted(resource_types)
    paths: dict[str, Any] = {}
    for path, item in document["paths"].items():
        if collections is not None and path.startswith(_GENERIC):
            for name in collections:
                concrete = copy.deepcopy(item)
                concrete["parameters"] = [
                    p for p in concrete.get("parameters", []) if p != _COLLECTION_PARAMETER
                ]
                for operation in concrete.values():
                    if isinstance(operation, dict) and "operationId" in operation:
                        operation["operationId"] = f"{operation['operationId']}.{name}"
                paths[path_prefix + "/" + name + path[len(_GENERIC) - 1 :]] = concrete
        else:
            paths[path_prefix + path] = item
    document["paths"] = paths
    return document
