"""Pages from the endpoints' documents: Jinja2 templates with autoescaping, and their response.

A page is a function of the document the JSON shows (an operation view with
its ``tasks``, a task view, a list with its ``*_links``): the same views, the
same authorization and the same project scoping, since the endpoint made the
document before the representation was chosen. Every value goes through
Jinja2's autoescaping; nothing builds HTML by hand, so a port named
``<img src=x onerror=...>`` is text on the page.

Example::

    pages = Pages(collections={"port": "ports"})
    response = pages.response("operation", {"operation": view}, request, etag='"ab12"')
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from webob import Request, Response

from tasktoolkit.pages._assets import Assets
from tasktoolkit.pages._timeline import duration_text, parse_time, timeline, utc_text

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE_NAMES", "PageRequest", "Pages"]

#: Only the app's own script and style; no inline script or style, no frames,
#: forms post back here only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: The endpoints (by name) that have a page, and its template.
PAGE_NAMES: Mapping[str, str] = {
    "operation": "operation.html",
    "operations": "operations.html",
    "tasks": "tasks.html",
    "resource_tasks": "tasks.html",
    "task": "task.html",
    "resource_task": "task.html",
}
#: Seconds a page without script waits before it reloads itself while anything is active.
REFRESH_SECONDS = 5
_ACTIVE = frozenset({"pending", "running"})
_TASK_STATES = ("pending", "running", "succeeded", "failed", "cancelled")
_OPERATION_STATES = ("running", "succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What a page needs of its request: where the endpoints are, and what it asked.

    :param base: the endpoints' root URL path (the script name and the path prefix).
    :param path: this page's path.
    :param query: this page's query, as ``(name, value)`` pairs (the filters it shows).
    :param etag: the ``ETag`` of the JSON of the page's record, for its script's
        conditional waits.
    :param now: the time of the drawing.
    """

    base: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    etag: str | None = None
    now: datetime | None = None


class Pages:
    """The pages of one mount of the endpoints.

    :param collections: each resource type's collection name (``{"port": "ports"}``),
        to link a resource's tasks.
    :param path_prefix: where the endpoints are mounted (``/v2.0``).
    :param max_wait: the longest ``Prefer: wait`` the endpoints honour; the
        pages' script asks for at most this (and 25 s).
    """

    def __init__(
        self,
        *,
        collections: Mapping[str, str],
        path_prefix: str = "",
        max_wait: int = 30,
    ) -> None:
        self.collections = dict(collections)
        self.path_prefix = path_prefix
        self.wait = max(min(max_wait, 25), 0)
        self.assets = Assets()
        self.environment = Environment(
            loader=PackageLoader("tasktoolkit.pages", "templates"),
            autoescape=select_autoescape(),
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # the package's templates do not change while it runs
        )

    @staticmethod
    def has(name: object) -> bool:
        """Whether endpoint ``name`` has a page (the others answer JSON only)."""
        return name in PAGE_NAMES

    @staticmethod
    def form_environ(environ: Mapping[str, Any]) -> dict[str, Any]:
        """``environ`` without the query's blank values: what a page's form leaves blank
        (``state=&name=``) is no filter, where the JSON would refuse it."""
        query = str(environ.get("QUERY_STRING", ""))
        pairs = [pair.partition("=") for pair in query.split("&")]
        kept = "&".join(name + eq + value for name, eq, value in pairs if name and value)
        return {**environ, "QUERY_STRING": kept}

    def page_request(
        self, request: Request, *, etag: str | None = None, now: datetime | None = None
    ) -> PageRequest:
        """The :class:`PageRequest` of a webob ``request``."""
        return PageRequest(
            base=request.script_name + self.path_prefix,
            path=request.path,
            query=tuple(parse_qsl(request.query_string, keep_blank_values=True)),
            etag=etag,
            now=now,
        )

    def render(self, name: str, document: Mapping[str, Any], request: PageRequest) -> str:
        """The HTML page of endpoint ``name``'s ``document``.

        :raises KeyError: ``name`` has no page (see :data:`PAGE_NAMES`).
        """
        template = self.environment.get_template(PAGE_NAMES[name])
        view = _View(self, name, request, request.now or datetime.now(UTC))
        return template.render(document=document, page=view, **_context(name, document, view))

    def render_error(self, document: Mapping[str, Any], status: int, request: PageRequest) -> str:
        """The page of an error document (``{"errors": [...]}``, the contract's)."""
        view = _View(self, "error", request, request.now or datetime.now(UTC))
        errors = document.get("errors") or [{"status": status, "detail": ""}]
        return self.environment.get_template("error.html").render(
            errors=errors, status=status, page=view
        )

    def response(
        self,
        name: str,
        document: Mapping[str, Any],
        request: Request,
        *,
        status: int = 200,
        etag: str | None = None,
    ) -> Response:
        """The page of endpoint ``name``'s ``document`` as a response, with its security headers."""
        return page_response(
            self.render(name, document, self.page_request(request, etag=etag)), status
        )

    def error_response(self, error: Response, request: Request) -> Response:
        """The page of a JSON error ``error`` (the contract's document), its headers kept."""
        try:
            document = json.loads(error.body)
        except ValueError:
            document = {}
        if not isinstance(document, dict):
            document = {}
        html = self.render_error(document, error.status_int, self.page_request(request))
        response = page_response(html, error.status_int)
        for header in ("Retry-After", "Allow"):
            if header in error.headers:
                response.headers[header] = error.headers[header]
        return response


def page_response(html: str, status: int = 200) -> Response:
    """An HTML response with the pages' headers: the CSP, ``nosniff``, ``Vary: Accept``."""
    response = Response(
        status=status, body=html.encode("utf-8"), content_type="text/html", charset="utf-8"
    )
    headers = response.headers
    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    headers["Cache-Control"] = "no-cache"
    headers["Vary"] = "Accept"
    return response


class _View:
    """What the templates call: links, times, and the live part's attributes."""

    def __init__(self, pages: Pages, name: str, request: PageRequest, now: datetime) -> None:
        self.name = name
        self.request = request
        self.base = request.base
        self.now = now
        self.refresh = REFRESH_SECONDS
        self.css = pages.assets.path("page.css", prefix=request.base)
        self.js = pages.assets.path("page.js", prefix=request.base)
        self._collections = pages.collections
        self._wait = pages.wait

    # -- links ---------------------------------------------------------------

    def operation_url(self, operation_id: str) -> str:
        return f"{self.base}/operations/{quote(str(operation_id), safe='')}"

    def task_url(self, task_id: str) -> str:
        return f"{self.base}/tasks/{quote(str(task_id), safe='')}"

    def resource_url(self, resource_type: str | None, resource_id: object) -> str | None:
        """A resource's tasks page, when its type is mounted as a collection."""
        collection = self._collections.get(resource_type or "")
        if collection is None or resource_id is None:
            return None
        return f"{self.base}/{collection}/{quote(str(resource_id), safe='')}/tasks"

    def next_url(self, links: Iterable[Mapping[str, str]]) -> str | None:
        """The next page's link, as a query on this page (never another host's URL)."""
        for link in links:
            if link.get("rel") == "next":
                return "?" + urlsplit(link.get("href", "")).query
        return None

    def first_url(self) -> str | None:
        """This list's first page, when this is a later one."""
        if not any(name == "marker" for name, _ in self.request.query):
            return None
        kept = [(n, v) for n, v in self.request.query if n != "marker"]
        return "?" + urlencode(kept) if kept else self.request.path

    def value(self, name: str) -> str:
        """The query's value of filter ``name`` (to show in the form)."""
        return next((v for n, v in self.request.query if n == name), "")

    # -- times ---------------------------------------------------------------

    def utc(self, text: object) -> str:
        moment = parse_time(text)
        return "" if moment is None else utc_text(moment)

    def took(self, since: object, until: object) -> str:
        """How long from ``since`` to ``until`` (to now when ``until`` is not yet)."""
        start = parse_time(since)
        end = parse_time(until) or self.now
        return "" if start is None else duration_text(max((end - start).total_seconds(), 0.0))

    # -- live ----------------------------------------------------------------

    def live(self, watch: str | None, *, etag: str | None = None) -> dict[str, str]:
        """The live part's ``data-*``: what its script waits on (none once all is final)."""
        if watch is None:
            return {}
        found = {"data-watch": watch, "data-wait": str(self._wait)}
        if etag:
            found["data-etag"] = etag
        return found


def _first_active(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return next((r for r in records if r.get("state") in _ACTIVE), None)


def _context(name: str, document: Mapping[str, Any], view: _View) -> dict[str, Any]:
    """Each page's own values: its record or list, its timeline, what its script watches."""
    if name == "operation":
        operation = document["operation"]
        tasks = list(operation.get("tasks") or ())
        active = operation.get("state") == "running" or _first_active(tasks) is not None
        resources = {(t.get("resource_type"), t.get("resource_id")) for t in tasks}
        line = timeline(
            tasks,
            since=parse_time(operation.get("created_at")),
            until=parse_time(operation.get("finished_at")),
            now=view.now,
            grouped=len(resources) > 1,
        )
        watch = view.request.path if active else None
        return {
            "operation": operation,
            "tasks": tasks,
            "line": line,
            "live": view.live(watch, etag=view.request.etag),
        }
    if name in ("task", "resource_task"):
        task = document["task"]
        line = timeline([task], since=None, now=view.now)
        watch = view.request.path if task.get("state") in _ACTIVE else None
        return {"task": task, "line": line, "live": view.live(watch, etag=view.request.etag)}
    key = "operations" if name == "operations" else "tasks"
    records = list(document.get(key) or ())
    first = _first_active(records)
    watch = None
    if first is not None:
        watch = (view.operation_url if key == "operations" else view.task_url)(first["id"])
    return {
        "records": records,
        "links": document.get(f"{key}_links") or (),
        "live": view.live(watch),
        "states": _OPERATION_STATES if key == "operations" else _TASK_STATES,
        "filters": _FILTERS[name],
        "heading": _heading(name, view.request),
    }


def _heading(name: str, request: PageRequest) -> str:
    """A list's title: ``Operations``, ``Tasks``, ``Tasks of ports 42`` (from its path)."""
    if name != "resource_tasks":
        return name.capitalize()
    parts = request.path[len(request.base) :].strip("/").split("/")
    return "Tasks of " + " ".join(unquote(part) for part in parts[:-1])


#: The filters each list's form offers (the list's own query parameters).
_FILTERS: Mapping[str, tuple[str, ...]] = {
    "operations": ("action", "method", "resource_type", "resource_id"),
    "tasks": ("name", "resource_type", "resource_id"),
    "resource_tasks": ("name",),
}
