"""A threaded development server (wsgiref) that can run in a background thread.

Good for the demo, the tests and trying the API; use gunicorn (see
``docs/sample_app.md``) for anything more.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.util import application_uri

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "BackgroundServer",
    "OperationPages",
    "ThreadingWSGIServer",
    "make_threaded_server",
    "server_url",
]

_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per connection."""

    daemon_threads = True
    allow_reuse_address = True


class _Handler(WSGIRequestHandler):
    """Logs requests only when asked to (the demo keeps the terminal for progress)."""

    quiet = True

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)


class _LoudHandler(_Handler):
    quiet = False


def make_threaded_server(
    app: WSGIApplication, host: str = "127.0.0.1", port: int = 0, *, log: bool = False
) -> ThreadingWSGIServer:
    """A threaded server bound to ``host:port`` (``0``: any free port), not yet serving."""
    server = make_server(
        host,
        port,
        app,
        server_class=ThreadingWSGIServer,
        handler_class=_LoudHandler if log else _Handler,
    )
    assert isinstance(server, ThreadingWSGIServer)
    return server


def server_url(server: WSGIServer) -> str:
    """The base URL a server answers on."""
    host, port = server.server_address[:2]
    if isinstance(host, bytes):
        host = host.decode()
    return f"http://{host}:{port}"


class BackgroundServer:
    """Serve ``app`` in a daemon thread; a context manager that stops it on exit.

    Example::

        with BackgroundServer(app) as server:
            urllib.request.urlopen(server.url + "/ports")
    """

    def __init__(self, app: WSGIApplication, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = make_threaded_server(app, host, port)
        self.url = server_url(self.server)
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="sample-app-server", daemon=True
        )

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


class OperationPages:
    """Prints, for each mutating request, the URL of its operation's page (``serve`` does).

    The operation's id is the request's (``X-Request-Id``): open the printed URL
    in a browser to watch its tasks on the timeline. Wrap it around the whole
    stack (outside the request-id middleware), e.g.::

        POST /ports 202: http://127.0.0.1:8080/operations/req-3f2a...
    """

    def __init__(self, app: WSGIApplication, out: TextIO | None = None) -> None:
        self.app = app
        self.out = out

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in _MUTATING:
            return self.app(environ, start_response)

        def start(
            status: str,
            headers: list[tuple[str, str]],
            exc_info: tuple[type[BaseException], BaseException, TracebackType] | None = None,
        ) -> Any:
            request_id = next((v for k, v in headers if k.lower() == "x-request-id"), None)
            if request_id:
                page = f"{application_uri(environ).rstrip('/')}/operations/{request_id}"
                line = f"{method} {environ.get('PATH_INFO', '')} {status[:3]}: {page}"
                print(line, file=self.out or sys.stdout, flush=True)
            return start_response(status, headers, exc_info)

        return self.app(environ, start)
