"""The OpenAPI 3.1 document: its paths from the endpoint table, its parts from ``openapi.json``.

The shipped ``openapi.json`` holds what the endpoints share (the schemas of the
records, the parameters, the error responses, the headers). Its paths are not
written anywhere: :func:`openapi_document` makes them from the endpoint table, each
endpoint's path and methods as it is routed and dispatched, and what the
document says of it (:class:`~._described.Described`) beside it in the table. So the
document and the server cannot disagree on what exists.

A resource's endpoints are described once, under ``/{collection}/{resource_id}/...``;
for a host, they are expanded per mounted collection, under its path prefix.

Example::

    document = openapi_document(collections=["ports", "networks"], path_prefix="/v2.0")
    document["paths"]["/v2.0/ports/{resource_id}/tasks"]["get"]
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from importlib import resources
from typing import Any

from tasktoolkit.endpoints._described import Described, ref
from tasktoolkit.endpoints._table import ENDPOINTS
from tasktoolkit.endpoints._waiting import PREFER_REFUSED

__all__ = ["load_parts", "openapi_document"]

_VARIABLE = re.compile(r"\{([A-Za-z_]+)\}")
#: A path variable's parameter in ``components/parameters``, where its name differs
#: (``resource_id`` there is the query filter).
_PATH_PARAMETER = {"resource_id": "resource_id_path"}


def load_parts() -> dict[str, Any]:
    """The shipped parts of the document: its version, ``info`` and ``components``."""
    text = resources.files("tasktoolkit.endpoints").joinpath("openapi.json").read_text("utf-8")
    parts: dict[str, Any] = json.loads(text)
    return parts


def openapi_document(
    *,
    collections: Iterable[str] | None = None,
    path_prefix: str = "",
    resource_types: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the endpoints, as a host mounts them.

    :param collections: the mounted collection names; ``None`` keeps the generic
        ``/{collection}/...`` paths.
    :param path_prefix: the prefix the endpoints are mounted under (``/v2.0``).
    :param resource_types: the resource types the host declares: ``/tasks`` takes
        no other ``resource_type``. ``None`` leaves it at the pattern.
    """
    parts = load_parts()
    # The rules the server reads a header by are the server's: said once, there.
    parts["components"]["parameters"]["Prefer"]["schema"]["not"] = {"pattern": PREFER_REFUSED}
    if resource_types is not None:
        schema = parts["components"]["parameters"]["resource_type"]["schema"]
        schema["enum"] = sorted(resource_types)
    names = None if collections is None else list(collections)
    paths: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        described = endpoint.described
        if described is None:
            continue
        for name in [None] if names is None or not endpoint.of_resource else names:
            path = endpoint.path if name is None else endpoint.path_of(name)
            item = paths.setdefault(path_prefix + path, {})
            variables = _path_parameters(path)
            if variables:
                item["parameters"] = variables
            for method in endpoint.methods:
                if method != "HEAD":
                    item[method.lower()] = _operation(described, name)
    shared = {key: value for key, value in parts.items() if key != "components"}
    return {**shared, "paths": paths, "components": parts["components"]}


def _path_parameters(path: str) -> list[dict[str, str]]:
    return [ref("parameters", _PATH_PARAMETER.get(v, v)) for v in _VARIABLE.findall(path)]


def _operation(described: Described, collection: str | None) -> dict[str, Any]:
    suffix = "" if collection is None else f".{collection}"
    operation: dict[str, Any] = {
        "operationId": described.operation_id + suffix,
        "summary": described.summary,
    }
    if described.parameters:
        operation["parameters"] = [ref("parameters", p) for p in described.parameters]
    operation["responses"] = json.loads(json.dumps(described.responses))  # a copy of its own
    return operation
