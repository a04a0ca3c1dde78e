"""The contract's JSON error body, shared by the middleware and the endpoints.

Every error response is::

    {"errors": [{"request_id": "req-...", "code": "tasktoolkit.invalid_filter",
                 "status": 400, "title": "Bad Request", "detail": "..."}]}

Example (a bare WSGI app answering with a typed error)::

    status, headers, body = error_for(InvalidFilterError("limit: must be >= 1"), request_id)
    start_response(status, headers)
    return [body]
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from http import HTTPStatus

from tasktoolkit.errors import TaskToolkitError

__all__ = [
    "JSON_CONTENT_TYPE",
    "ErrorDocument",
    "error_body",
    "error_document",
    "error_for",
    "error_response",
    "status_line",
]

JSON_CONTENT_TYPE = "application/json"

#: ``{"errors": [{...}]}``.
ErrorDocument = dict[str, list[dict[str, object]]]


def status_line(status: int) -> str:
    """The WSGI status line of ``status``: ``status_line(503) == "503 Service Unavailable"``."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def error_document(
    *,
    status: int,
    code: str,
    detail: str,
    request_id: str | None,
    title: str | None = None,
) -> ErrorDocument:
    """The error body as a dict.

    :param code: machine-readable, ``tasktoolkit.<what>``.
    :param detail: what was wrong, for a human; never a traceback.
    :param title: defaults to the status phrase (``Bad Request``).
    """
    if title is None:
        title = status_line(status).partition(" ")[2]
    return {
        "errors": [
            {
                "request_id": request_id,
                "code": code,
                "status": status,
                "title": title,
                "detail": detail,
            }
        ]
    }


def error_body(
    *,
    status: int,
    code: str,
    detail: str,
    request_id: str | None,
    title: str | None = None,
) -> bytes:
    """:func:`error_document` serialised as UTF-8 JSON."""
    document = error_document(
        status=status, code=code, detail=detail, request_id=request_id, title=title
    )
    return json.dumps(document, separators=(",", ":")).encode()


def error_response(
    *,
    status: int,
    code: str,
    detail: str,
    request_id: str | None,
    headers: Iterable[tuple[str, str]] = (),
) -> tuple[str, list[tuple[str, str]], bytes]:
    """``(status line, headers, body)`` ready for ``start_response``.

    :param headers: extra headers (``Retry-After``, ``Allow``, ...).
    """
    body = error_body(status=status, code=code, detail=detail, request_id=request_id)
    all_headers = [
        ("Content-Type", JSON_CONTENT_TYPE),
        ("Content-Length", str(len(body))),
        *headers,
    ]
    return status_line(status), all_headers, body


def error_for(
    error: TaskToolkitError,
    request_id: str | None,
    *,
    headers: Iterable[tuple[str, str]] = (),
) -> tuple[str, list[tuple[str, str]], bytes]:
    """:func:`error_response` for a typed error: its status, its code, its message."""
    return error_response(
        status=error.status,
        code=error.code,
        detail=str(error),
        request_id=request_id,
        headers=headers,
    )
