"""Error responses of the endpoints: the contract's body (from :mod:`tasktoolkit.http_errors`)
with the request's id inside, as a webob response.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from webob import Response

from tasktoolkit import context
from tasktoolkit.errors import TaskToolkitError
from tasktoolkit.http_errors import JSON_CONTENT_TYPE, error_body

__all__ = ["REQUEST_ID_KEY", "error_response", "request_id_of", "response_for"]

#: Where the request-id middleware keeps the request's id.
REQUEST_ID_KEY = "tasktoolkit.request_id"


def request_id_of(environ: Mapping[str, Any]) -> str:
    """The request's id: the middleware's, else the bound context's, else a fresh one."""
    value = environ.get(REQUEST_ID_KEY)
    if context.is_valid_request_id(value):
        return str(value)
    ctx = context.current()
    return ctx.request_id if ctx is not None else context.new_request_id()


def error_response(
    environ: Mapping[str, Any],
    status: int,
    code: str,
    detail: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """A webob response carrying the error document."""
    body = error_body(status=status, code=code, detail=detail, request_id=request_id_of(environ))
    response = Response(status=status, body=body, content_type=JSON_CONTENT_TYPE, charset=None)
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
