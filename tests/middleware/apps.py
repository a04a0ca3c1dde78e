"""Small WSGI apps the middleware tests put behind the middlewares.

``cluster_app`` is a tiny host app: ``POST /clusters`` creates a cluster with
tasks (in its own session, as a host app would), logs, and answers with what
it saw of the request; other paths answer from a table of canned behaviours.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import Toolkit, context
from tasktoolkit.middleware import REQUEST_ID_KEY, set_operation_target
from tests.models import Cluster

log = logging.getLogger("tests.middleware.app")

StartResponse = Callable[..., Any]


def _json(start_response: StartResponse, status: str, document: object) -> list[bytes]:
    body = json.dumps(document).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def seen(environ: dict[str, Any]) -> dict[str, Any]:
    """What the app saw of the request: environ ids and the bound context."""
    ctx = context.current()
    return {
        "environ_request_id": environ.get(REQUEST_ID_KEY),
        "context_request_id": ctx.request_id if ctx else None,
        "operation_id": ctx.operation_id if ctx else None,
        "project_id": ctx.project_id if ctx else None,
    }


def cluster_app(
    session_factory: sessionmaker[Session],
    *,
    task_names: Iterable[str] = ("provision", "configure"),
    on_request: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The host app.

    :param on_request: called first with the environ (to look at the database
        while the request runs).
    """
    names = list(task_names)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if on_request is not None:
            on_request(environ)
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if method == "POST" and path == "/clusters":
            with session_factory() as session:
                cluster = Cluster(name="c", project_id=context.current().project_id)  # type: ignore[union-attr]
                session.add(cluster)
                session.flush()
                cluster.spawn_tasks(names)
                session.commit()
                cluster_id = cluster.id
            set_operation_target(environ, "cluster", cluster_id)
            log.info("created cluster %s", cluster_id)
            return _json(start_response, "201 Created", {"cluster": cluster_id, **seen(environ)})
        if path == "/fail":
            return _json(start_response, "409 Conflict", {"error": "no"})
        if path == "/raise":
            raise RuntimeError("the app broke")
        if path == "/stream":
            return Streaming(start_response, environ)
        log.info("%s %s", method, path)
        return _json(start_response, "200 OK", seen(environ))

    return app


class Streaming:
    """A streaming body that records whether it was closed and what it saw while iterated."""

    def __init__(self, start_response: StartResponse, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.closed = False
        self.seen_while_iterating: list[dict[str, Any]] = []
        environ["tests.streaming"] = self
        start_response("200 OK", [("Content-Type", "text/plain")])

    def __iter__(self) -> Iterator[bytes]:
        for chunk in (b"one ", b"two ", b"three"):
            self.seen_while_iterating.append(seen(self.environ))
            yield chunk

    def close(self) -> None:
        self.closed = True


#: The host's Toolkit for the api-paste.ini test (set by the test).
TOOLKIT: Toolkit | None = None


def app_factory(global_conf: dict[str, str], **local_conf: str) -> Any:
    """``paste.app_factory`` for the api-paste.ini test: the cluster app on the host's
    :data:`TOOLKIT` (its sessions), as the filters use it."""
    assert TOOLKIT is not None, "set tests.middleware.apps.TOOLKIT first"
    return cluster_app(TOOLKIT.sessions)
