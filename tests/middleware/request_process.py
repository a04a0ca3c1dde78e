"""One request in a process of its own, killed between the app's commit and its end.

``python -m tests.middleware.request_process URL``: serves one ``POST /clusters``
through both middlewares; the app creates a cluster with two tasks and commits,
prints the request id, then blocks for ever before answering, so the process
can be killed with the operation written and its request's end not.
"""

from __future__ import annotations

import io
import sys
import threading
from typing import Any

from tasktoolkit import Toolkit
from tasktoolkit.middleware import OPERATION_ID_KEY
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


def main(url: str) -> None:
    toolkit = Toolkit(url)
    sessions = toolkit.sessions

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with sessions() as session:
            cluster = Cluster(name="killed", project_id="p1")
            session.add(cluster)
            session.flush()
            cluster.spawn_tasks(["provision", "configure"])
            session.commit()
        print(environ[OPERATION_ID_KEY], flush=True)
        threading.Event().wait()  # killed here, before the response
        raise AssertionError("unreachable")

    stack = toolkit.wsgi(app)
    stack(post_environ(), lambda status, headers, exc_info=None: None)


if __name__ == "__main__":
    main(sys.argv[1])
