"""One request in a process of its own, through both middlewares.

``python -m tests.middleware.request_process URL [MODE]``: serves one
``POST /clusters`` whose app creates a cluster with tasks and commits, then

- ``killed`` (the default): prints the request id and blocks for ever before
  answering, so the process can be killed with the operation written and its
  request's end not (two tasks, ``provision`` and ``configure``);
- ``answered``: answers 202, records the request's end and prints the request
  id (one ``build`` task, its name's default rules): an API host, run under a
  faked clock by ``tests/orm/test_clocks.py``.
"""

from __future__ import annotations

import io
import sys
import threading
from typing import Any

from tasktoolkit import Toolkit
from tasktoolkit.middleware import OPERATION_ID_KEY, flush_ends
from tests.models import Cluster


def post_environ() -> dict[str, Any]:
    """The environ of a ``POST /clusters`` in project ``p1``."""
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/clusters",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "HTTP_X_PROJECT_ID": "p1",
    }


def main(url: str, mode: str = "killed") -> None:
    toolkit = Toolkit(url)
    sessions = toolkit.sessions
    killed = mode == "killed"

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with sessions() as session:
            cluster = Cluster(name=mode, project_id="p1")
            session.add(cluster)
            session.flush()
            cluster.spawn_tasks(["provision", "configure"] if killed else ["build"])
            session.commit()
        if killed:
            print(environ[OPERATION_ID_KEY], flush=True)
            threading.Event().wait()  # killed here, before the response
            raise AssertionError("unreachable")
        start_response("202 Accepted", [("Content-Type", "text/plain")])
        return [environ[OPERATION_ID_KEY].encode()]

    stack = toolkit.wsgi(app)
    body = stack(post_environ(), lambda status, headers, exc_info=None: None)
    request_id = b"".join(body).decode()
    body.close()  # type: ignore[attr-defined]  # the request's end goes to the end writer
    flush_ends()  # written before the process goes
    print(request_id, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
