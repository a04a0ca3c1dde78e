"""The pages' own stylesheet and script, served by the endpoints under a versioned URL.

The version is a digest of the files, so a URL names one content for ever:
it is served with a year's ``immutable`` caching, and a new release gets new
URLs. Nothing is loaded from anywhere else.

Example::

    assets = Assets()
    assets.path("page.css")        # '/_tasktoolkit/3f2a9c1b7d04/page.css' (under a prefix)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from webob import Response

from tasktoolkit._environ import ROUTING_ARGS_KEY
from tasktoolkit.http_errors import error_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["ASSET_ROUTE", "Asset", "Assets"]

#: Where the assets are connected, under the endpoints' path prefix. A
#: collection name cannot start with ``_``, so no resource's path shadows it.
ASSET_ROUTE = "/_tasktoolkit/{version}/{asset}"
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_NAMES = ("page.css", "page.js")
_YEAR = 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Asset:
    """One file: its bytes and its content type."""

    body: bytes
    content_type: str


class Assets:
    """The pages' files, read once from the package, and the WSGI app that serves them.

    A request for another version or an unknown name is a ``404``: an old URL
    is never answered with new content that caches would then keep as the old.
    """

    def __init__(self) -> None:
        folder = files("tasktoolkit.pages").joinpath("static")
        self.files: Mapping[str, Asset] = {
            name: Asset(folder.joinpath(name).read_bytes(), _TYPES[name[name.rindex(".") :]])
            for name in _NAMES
        }
        digest = hashlib.sha256()
        for name in _NAMES:
            digest.update(self.files[name].body)
        self.version = digest.hexdigest()[:12]

    #: Where they are connected, under the endpoints' path prefix.
    route = ASSET_ROUTE

    @property
    def size(self) -> int:
        """The bytes of every file together (the figure kept under 30 KiB)."""
        return sum(len(asset.body) for asset in self.files.values())

    def path(self, name: str, *, prefix: str = "") -> str:
        """The URL path of asset ``name`` under ``prefix`` (the script name and path prefix)."""
        return prefix + ASSET_ROUTE.format(version=self.version, asset=name)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        routing = environ.get(ROUTING_ARGS_KEY)
        match: Mapping[str, Any] = routing[1] if isinstance(routing, tuple) else {}
        method = environ.get("REQUEST_METHOD", "GET")
        asset = self.files.get(match.get("asset", ""))
        if method not in ("GET", "HEAD"):
            response = error_response(
                environ,
                405,
                "tasktoolkit.method_not_allowed",
                f"{method} is not allowed here; use GET, HEAD",
                headers=[("Allow", "GET, HEAD")],
            )
        elif asset is None or match.get("version") != self.version:
            response = error_response(environ, 404, "tasktoolkit.not_found", "no such asset")
        else:
            response = Response(body=asset.body, content_type=asset.content_type, charset=None)
            response.headers["Cache-Control"] = f"public, max-age={_YEAR}, immutable"
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["ETag"] = f'"{self.version}"'
        return response(environ, start_response)  # type: ignore[no-any-return]
