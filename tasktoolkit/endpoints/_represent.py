"""What a handler answers (data), and its representation (JSON), applied in one place.

A handler returns an :class:`Answer`: a document (the views of
:mod:`tasktoolkit.views`), a status and headers; or a :class:`Waiting`, the
read of one record that ``Prefer: wait`` may repeat. It never builds a
response: :func:`represent` does, for every endpoint, so the representation
(JSON today; HTML pages from the same answers next) and the validators
(``ETag``, ``If-None-Match``) are written once.

Example::

    answer = Answer({"task": task_view(task, admin=False)}, tagged=True)
    response = represent(answer, request)    # 200 with an ETag, or 304
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from webob import Request, Response

from tasktoolkit.http_errors import JSON_CONTENT_TYPE

__all__ = ["Answer", "Waiting", "represent"]


@dataclass(frozen=True, slots=True)
class Answer:
    """A handler's answer, before any representation.

    :param document: the body as data (views, links).
    :param status: the HTTP status.
    :param headers: more headers (``Retry-After``), kept on a ``304`` too.
    :param tagged: a single record: it carries an ``ETag`` and answers ``304``
        to an ``If-None-Match`` that holds it.
    """

    document: Mapping[str, Any]
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    tagged: bool = False


@dataclass(frozen=True, slots=True)
class Waiting:
    """A read of one record that a ``Prefer: wait`` may repeat until it changes.

    :param record_id: the record whose changes wake the wait.
    :param read: its answer as it is now, and whether it is terminal (nothing
        more to wait for); each call reads the database again.
    """

    record_id: str
    read: Callable[[], tuple[Answer, bool]]


def represent(answer: Answer, request: Request) -> Response:
    """The JSON response of ``answer`` to ``request``: ``ETag`` and ``304`` for a record."""
    body = json.dumps(answer.document, separators=(",", ":")).encode("utf-8")
    response = Response(
        status=answer.status, body=body, content_type=JSON_CONTENT_TYPE, charset=None
    )
    if answer.tagged:
        etag = hashlib.sha256(body).hexdigest()[:32]
        if _matches(request.headers.get("If-None-Match"), etag):
            response = Response(status=304, charset=None)
            response.headers.pop("Content-Type", None)
        response.headers["ETag"] = f'"{etag}"'
    for name, value in answer.headers:
        response.headers[name] = value
    return response


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.strip('"') == etag:
            return True
    return False
