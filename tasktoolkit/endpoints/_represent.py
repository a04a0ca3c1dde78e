"""What a handler answers (data), and its representation (JSON or a page), applied in one place.

A handler returns an :class:`Answer`: a document (the views of
:mod:`tasktoolkit.views`), a status and headers; or a :class:`Waiting`, the
read of one record that ``Prefer: wait`` may repeat. It never builds a
response: :func:`represent` does, for every endpoint, so the representation
and the validators (``ETag``, ``If-None-Match``) are written once.

The representation is negotiated here too (:func:`negotiate`), once per
request: JSON, or, for a request that prefers ``text/html`` to an endpoint
with a page, that page (:mod:`tasktoolkit.pages`, when the ``[pages]`` extra
is installed) rendered from the same document; an error the same way
(:func:`represent_error`).

Example::

    answer = Answer({"task": task_view(task, admin=False)}, tagged=True)
    response = represent(answer, request)    # 200 with an ETag, or 304
    how = negotiate(request.environ, "task", pages)
    response = represent(answer, request, how)    # the task's page, to a browser
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from webob import Request, Response

from tasktoolkit.http_errors import JSON_CONTENT_TYPE
from tasktoolkit.orm import TaskResource

if TYPE_CHECKING:
    from tasktoolkit.pages import Pages

__all__ = [
    "JSON",
    "Answer",
    "Representation",
    "Waiting",
    "negotiate",
    "pages_of",
    "represent",
    "represent_error",
]


@dataclass(frozen=True, slots=True)
class Answer:
    """A handler's answer, before any representation.

    :param document: the body as data (views, links).
    :param status: the HTTP status.
    :param headers: more headers (``Retry-After``), kept on a ``304`` too.
    :param tagged: it carries an ``ETag`` (of its body) and answers ``304`` to an
        ``If-None-Match`` that holds it: a single record, or a list's page.
    :param weak: the ``ETag`` is weak (``W/"..."``): a list's, which says what
        the page shows, not the bytes of one representation of a record.
    """

    document: Mapping[str, Any]
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    tagged: bool = False
    weak: bool = False


@dataclass(frozen=True, slots=True)
class Waiting:
    """A read of one record that a ``Prefer: wait`` may repeat until it changes.

    :param record_id: the record whose changes wake the wait.
    :param read: its answer as it is now, and whether it is terminal (nothing
        more to wait for); each call reads the database again.
    """

    record_id: str
    read: Callable[[], tuple[Answer, bool]]


@dataclass(frozen=True, slots=True)
class Representation:
    """How one request's answers are represented: JSON, or the page of its endpoint.

    :param pages: render the answers as pages (the request prefers HTML);
        ``None``: JSON.
    :param endpoint: the endpoint whose page it is.
    :param varies: the endpoint has a page: the response varies on ``Accept``.
    """

    pages: Pages | None = None
    endpoint: str = ""
    varies: bool = False


#: The JSON, for an endpoint without a page.
JSON = Representation()


def pages_of(
    collections: Mapping[str, type[TaskResource]], path_prefix: str, max_wait: int
) -> Pages | None:
    """The pages of mounted ``collections``, or ``None`` when Jinja2 (the ``[pages]`` extra) is
    missing: then every answer is JSON."""
    try:
        from tasktoolkit.pages import Pages
    except ModuleNotFoundError as missing:
        if missing.name != "jinja2":
            raise
        return None
    types = {model.__resource_type__: name for name, model in collections.items()}
    return Pages(collections=types, path_prefix=path_prefix, max_wait=max_wait)


def negotiate(environ: Mapping[str, Any], endpoint: str, pages: Pages | None) -> Representation:
    """How to answer a request to ``endpoint``: its page when its ``Accept`` prefers
    ``text/html`` (:func:`tasktoolkit.pages.prefers_html`), else JSON."""
    if pages is None or not pages.has(endpoint):
        return JSON
    from tasktoolkit.pages import prefers_html

    if prefers_html(environ.get("HTTP_ACCEPT")):
        return Representation(pages, endpoint, varies=True)
    return Representation(None, endpoint, varies=True)


def represent(answer: Answer, request: Request, how: Representation = JSON) -> Response:
    """The response of ``answer`` to ``request``: JSON (``ETag`` and ``304`` for a record),
    or the endpoint's page (its script waits on the JSON with that ``ETag``)."""
    body = json.dumps(answer.document, separators=(",", ":")).encode("utf-8")
    etag = hashlib.sha256(body).hexdigest()[:32] if answer.tagged else None
    tag = None if etag is None else f'{"W/" if answer.weak else ""}"{etag}"'
    if how.pages is not None:
        response = how.pages.response(
            how.endpoint,
            answer.document,
            request,
            status=answer.status,
            # A page's script waits on its record's JSON: a list's page has none.
            etag=None if answer.weak else tag,
        )
    else:
        response = Response(
            status=answer.status, body=body, content_type=JSON_CONTENT_TYPE, charset=None
        )
        if etag is not None:
            if _matches(request.headers.get("If-None-Match"), etag):
                response = Response(status=304, charset=None)
                response.headers.pop("Content-Type", None)
            response.headers["ETag"] = tag
    for name, value in answer.headers:
        response.headers[name] = value
    if how.varies:
        response.vary = ("Accept",)
    return response


def represent_error(error: Response, request: Request, how: Representation = JSON) -> Response:
    """An error response (the contract's JSON) as ``how`` asks: as it is, or as a page."""
    if how.pages is not None:
        error = how.pages.error_response(error, request)
    if how.varies:
        error.vary = ("Accept",)
    return error


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
