"""The OpenAPI 3.1 document: its paths from the endpoint table, its parts from ``openapi.json``.

The shipped ``openapi.json`` holds what the endpoints share (the schemas of the
records, the parameters, the error responses, the headers). Its paths are not
written anywhere: :func:`document` makes them from the endpoint table, each
endpoint's path and methods as it is routed and dispatched, and what the
document says of it (:class:`Described`) beside it in the table. So the
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from tasktoolkit.endpoints._waiting import PREFER_REFUSED

if TYPE_CHECKING:
    from tasktoolkit.endpoints._table import Endpoint

__all__ = [
    "Described",
    "accepted",
    "document",
    "listing",
    "load_parts",
    "record",
]

_VARIABLE = re.compile(r"\{([A-Za-z_]+)\}")
#: A path variable's parameter in ``components/parameters``, where its name differs
#: (``resource_id`` there is the query filter).
_PATH_PARAMETER = {"resource_id": "resource_id_path"}


@dataclass(frozen=True, slots=True)
class Described:
    """What the OpenAPI document says of one endpoint (its path and methods are the table's).

    :param parameters: its query and header parameters, by their names in
        ``components/parameters`` (the path's own come from the path).
    :param responses: its responses, as :func:`listing`, :func:`record` and
        :func:`accepted` make them.
    """

    operation_id: str
    summary: str
    responses: Mapping[str, Any]
    parameters: tuple[str, ...] = field(default=())


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json_body(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref("schemas", schema)}}


def _headers(*names: str) -> dict[str, Any]:
    return {name: _ref("headers", name) for name in names}


_ERRORS = {
    "400": _ref("responses", "BadRequest"),
    "503": _ref("responses", "Unavailable"),
}


def listing(schema: str, *, of_resource: bool = False) -> dict[str, Any]:
    """The responses of a list: its page, a bad parameter; a resource not found."""
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": _json_body(schema)},
        **_ERRORS,
    }
    if of_resource:
        responses["404"] = _ref("responses", "NotFound")
    return responses


def record(schema: str, *, retry_after: bool = False) -> dict[str, Any]:
    """The responses of one record a client may wait on: tagged, ``304``, not found."""
    headers = _headers("ETag", *(["Retry-After"] if retry_after else []), "Preference-Applied")
    return {
        "200": {"description": "OK", "content": _json_body(schema), "headers": headers},
        "304": {"description": "Not Modified (If-None-Match)", "headers": headers},
        **_ERRORS,
        "404": _ref("responses", "NotFound"),
    }


def accepted(schema: str, description: str = "Accepted") -> dict[str, Any]:
    """The responses of a cancel: accepted (or replayed by its ``Idempotency-Key``), refused."""
    return {
        "202": {
            "description": description,
            "content": _json_body(schema),
            "headers": _headers("Idempotent-Replayed", "Idempotent-Body-Omitted"),
        },
        **_ERRORS,
        "403": _ref("responses", "Forbidden"),
        "404": _ref("responses", "NotFound"),
        "409": _ref("responses", "IdempotencyConflict"),
        "422": _ref("responses", "KeyReused"),
    }


def load_parts() -> dict[str, Any]:
    """The shipped parts of the document: its version, ``info`` and ``components``."""
    text = resources.files("tasktoolkit.endpoints").joinpath("openapi.json").read_text("utf-8")
    parts: dict[str, Any] = json.loads(text)
    return parts


def document(
    endpoints: Iterable[Endpoint],
    *,
    collections: Iterable[str] | None = None,
    path_prefix: str = "",
    resource_types: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The document of ``endpoints``: resource paths once per collection, under ``path_prefix``.

    :param collections: the mounted collection names; ``None`` keeps the generic
        ``/{collection}/...`` paths.
    :param path_prefix: the prefix given to :func:`~tasktoolkit.endpoints.mount`.
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
    for endpoint in endpoints:
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
    return [_ref("parameters", _PATH_PARAMETER.get(v, v)) for v in _VARIABLE.findall(path)]


def _operation(described: Described, collection: str | None) -> dict[str, Any]:
    suffix = "" if collection is None else f".{collection}"
    operation: dict[str, Any] = {
        "operationId": described.operation_id + suffix,
        "summary": described.summary,
    }
    if described.parameters:
        operation["parameters"] = [_ref("parameters", p) for p in described.parameters]
    operation["responses"] = json.loads(json.dumps(described.responses))  # a copy of its own
    return operation
