"""The contract's JSON error body, and the request id that goes in it.

``{"errors": [{"request_id", "code", "status", "title", "detail"}]}``
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

from webob import Response

from tasktoolkit import context
from tasktoolkit.errors import TaskToolkitError

__all__ = ["REQUEST_ID_KEY", "error_body", "error_response", "request_id_of", "response_for"]

#: Where the request-id middleware keeps the request's id.
REQUEST_ID_KEY = "tasktoolkit.request_id"


def request_id_of(environ: Mapping[str, Any]) -> str:
    """The request's id: the middleware's, else the bound context's, else a fresh one."""
    value = environ.get(REQUEST_ID_KEY)
    if context.is_valid_request_id(value):
        return str(value)
    ctx = context.current()
    return ctx.request_id if ctx is not None else context.new_request_id()


def error_body(request_id: str, status: int, code: str, detail: str) -> dict[str, Any]:
    """The error document for one error."""
    return {
        "errors": [
            {
                "request_id": request_id,
                "code": code,
                "status": status,
                "title": HTTPStatus(status).phrase,
                "detail": detail,
            }
        ]
    }


def error_response(
    environ: Mapping[str, Any],
    status: int,
    code: str,
    detail: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """A webob response carrying the error document."""
    body = json.dumps(error_body(request_id_of(environ), status, code, detail))
    response = Response(
        status=status, body=body.encode("utf-8"), content_type="application/json", charset=None
    )
    for name, value in headers:
        response.headers[name] = value
    return response


def response_for(
    environ: Mapping[str, Any],
    error: TaskToolkitError,
    *,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """The error document for a typed toolkit error."""
    return error_response(environ, error.status, error.code, str(error), headers=headers)
