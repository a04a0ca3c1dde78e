"""Pages for people: the endpoints' documents as server-rendered HTML (the ``[pages]`` extra).

The same URLs answer a browser: a request whose ``Accept`` prefers
``text/html`` (:func:`prefers_html`) gets a page rendered on the server, with
Jinja2's autoescaping, from the very document the JSON shows, after the same
authorization. An operation is drawn as a timeline (an SVG made on the
server: a row per task, a bar per attempt); lists have their filters as a
form and their ``next`` links. The stylesheet and script are the package's
own (:class:`Assets`), served by the endpoints under versioned URLs, and a
``Content-Security-Policy`` allows nothing else. While anything shown is
active, the script waits on the record's JSON with ``Prefer: wait`` and
redraws; without script, the page refreshes itself.

Example::

    pages = Pages(collections={"port": "ports"})
    if prefers_html(request.headers.get("Accept")):
        response = pages.response("operation", document, request)
"""

from __future__ import annotations

from tasktoolkit.pages._assets import ASSET_ROUTE, Assets
from tasktoolkit.pages._negotiation import prefers_html
from tasktoolkit.pages._render import (
    CONTENT_SECURITY_POLICY,
    PAGE_NAMES,
    PageRequest,
    Pages,
    page_response,
)

__all__ = [
    "ASSET_ROUTE",
    "CONTENT_SECURITY_POLICY",
    "PAGE_NAMES",
    "Assets",
    "PageRequest",
    "Pages",
    "page_response",
    "prefers_html",
]
