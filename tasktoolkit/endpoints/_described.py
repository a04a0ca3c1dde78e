"""What the OpenAPI document says of one endpoint, beside it in the endpoint table.

:class:`Described` holds an endpoint's operation id, summary, parameters and
responses; :func:`listing`, :func:`record` and :func:`accepted` make the
responses of the endpoints' three kinds (a list, a record a client may wait
on, a cancel), over the parts the shipped ``openapi.json`` holds.

Example::

    Described("showTask", "One task", record("TaskDocument"), ("If-None-Match", "Prefer"))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Described", "accepted", "forbidding", "listing", "record", "ref"]


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


def ref(kind: str, name: str) -> dict[str, str]:
    """A reference to ``components/<kind>/<name>`` of the document."""
    return {"$ref": f"#/components/{kind}/{name}"}


def _json_body(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": ref("schemas", schema)}}


def _headers(*names: str) -> dict[str, Any]:
    return {name: ref("headers", name) for name in names}


_ERRORS = {
    "400": ref("responses", "BadRequest"),
    "503": ref("responses", "Unavailable"),
}


def listing(schema: str, *, of_resource: bool = False) -> dict[str, Any]:
    """The responses of a list: its page (with a weak ``ETag``; ``304``), a bad parameter;
    a resource not found."""
    headers = _headers("ETag")
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": _json_body(schema), "headers": headers},
        "304": {"description": "Not Modified (If-None-Match)", "headers": headers},
        **_ERRORS,
    }
    if of_resource:
        responses["404"] = ref("responses", "NotFound")
    return responses


def forbidding(responses: dict[str, Any]) -> dict[str, Any]:
    """``responses`` and a ``403``: the caller may not ask this at all."""
    return {**responses, "403": ref("responses", "Forbidden")}


def record(schema: str, *, retry_after: bool = False) -> dict[str, Any]:
    """The responses of one record a client may wait on: tagged, ``304``, not found."""
    headers = _headers("ETag", *(["Retry-After"] if retry_after else []), "Preference-Applied")
    return {
        "200": {"description": "OK", "content": _json_body(schema), "headers": headers},
        "304": {"description": "Not Modified (If-None-Match)", "headers": headers},
        **_ERRORS,
        "404": ref("responses", "NotFound"),
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
        "403": ref("responses", "Forbidden"),
        "404": ref("responses", "NotFound"),
        "409": ref("responses", "IdempotencyConflict"),
        "422": ref("responses", "KeyReused"),
    }
