"""The contract's error responses, made in one place for the endpoints, the middleware
and host apps.

Every error response is::

    {"errors": [{"request_id": "req-...", "code": "tasktoolkit.invalid_filter",
                 "status": 400, "title": "Bad Request", "detail": "..."}]}

with the request's id inside (the request-id middleware's, from the environ).
A ``503`` carries ``Retry-After``: the settings' ``unavailable_retry_after``,
from the settings the request-id middleware put in the environ.

Example (a WSGI app answering with a typed error)::

    response = response_for(environ, InvalidFilterError("limit: must be >= 1"))
    return response(environ, start_response)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cache
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from webob import Response

from tasktoolkit import context
from tasktoolkit._environ import REQUEST_ID_KEY, SETTINGS_KEY
from tasktoolkit.errors import DatabaseUnavailableError, TaskToolkitError

if TYPE_CHECKING:
    from tasktoolkit.settings import Settings

__all__ = [
    "JSON_CONTENT_TYPE",
    "error_body",
    "error_response",
    "request_id_of",
    "response_for",
    "unavailable_retry_after",
]

JSON_CONTENT_TYPE = "application/json"


def request_id_of(environ: Mapping[str, Any]) -> str:
    """The request's id: the middleware's, else the bound context's, else a fresh one."""
    value = environ.get(REQUEST_ID_KEY)
    if context.is_valid_request_id(value):
        return str(value)
    ctx = context.current()
    return ctx.request_id if ctx is not None else context.new_request_id()


def error_body(*, status: int, code: str, detail: str, request_id: str | None) -> bytes:
    """The contract's error document, as UTF-8 JSON.

    :param code: machine-readable, ``tasktoolkit.<what>`` (a host's own prefix for its errors).
    :param detail: what was wrong, for a human; never a traceback.
    """
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Unknown"
    error = {
        "request_id": request_id,
        "code": code,
        "status": status,
        "title": title,
        "detail": detail,
    }
    return json.dumps({"errors": [error]}, separators=(",", ":")).encode()


def error_response(
    environ: Mapping[str, Any],
    status: int,
    code: str,
    detail: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """A webob response carrying the error document of this request.

    :param headers: extra headers (``Allow``, ...).
    """
    body = error_body(status=status, code=code, detail=detail, request_id=request_id_of(environ))
    response = Response(status=status, body=body, content_type=JSON_CONTENT_TYPE, charset=None)
    for name, value in headers:
        response.headers[name] = value
    return response


def unavailable_retry_after(environ: Mapping[str, Any]) -> str:
    """The ``Retry-After`` of a 503 to this request: its settings' ``unavailable_retry_after``
    (the defaults' outside the toolkit's middleware)."""
    settings = environ.get(SETTINGS_KEY) or _default_settings()
    return str(int(settings.unavailable_retry_after.total_seconds()))


@cache
def _default_settings() -> Settings:
    from tasktoolkit.settings import Settings

    return Settings()


def response_for(
    environ: Mapping[str, Any],
    error: TaskToolkitError,
    *,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """:func:`error_response` for a typed error: its status, code and message.

    A :class:`~tasktoolkit.errors.DatabaseUnavailableError` gets its ``Retry-After``.
    """
    if isinstance(error, DatabaseUnavailableError):
        headers = [("Retry-After", unavailable_retry_after(environ)), *headers]
    return error_response(environ, error.status, error.code, str(error), headers=headers)
