"""A process whose end writer holds the ends of its requests, for the end writer's tests.

``python -m tests.middleware.writer_process MODE URL COUNT``: serves ``COUNT``
``POST /clusters`` through the toolkit's stack (each spawns two tasks), with
the end writer's thread held back, so every end is still held; prints each
request id, then ``held``, and then, by ``MODE``:

- ``exit``: returns from ``main``; the interpreter's exit flushes the ends;
- ``wait``: blocks, to be sent ``SIGTERM`` (which flushes) or ``SIGKILL`` (a crash);
- ``fork``: forks; the child serves ``COUNT`` requests of its own with its
  writer running, prints them under ``child``, and exits; the parent then
  prints ``child-exited`` and waits on ``stdin`` before it lets its own
  writer go and exits.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from tasktoolkit import Toolkit
from tasktoolkit.middleware import OPERATION_ID_KEY
from tasktoolkit.middleware._ends import EndWriter
from tests.middleware.request_process import post_environ
from tests.models import Cluster

_start = EndWriter._start


def hold_the_writers() -> None:
    """No writer thread starts: every end handed over stays held (the test's lever)."""
    EndWriter._start = lambda self: None  # type: ignore[method-assign]


def let_the_writers_go() -> None:
    EndWriter._start = _start  # type: ignore[method-assign]


def serve(stack: Any, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        environ = post_environ()
        body = stack(environ, lambda status, headers, exc_info=None: None)
        b"".join(body)
        body.close()  # the end is handed to the writer here
        ids.append(environ[OPERATION_ID_KEY])
    return ids


def main(mode: str, url: str, count: int) -> None:
    toolkit = Toolkit(url)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with toolkit.sessions() as session:
            cluster = Cluster(name="held", project_id="p1")
            session.add(cluster)
            session.flush()
            cluster.spawn_tasks(["provision", "configure"])
            session.commit()
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"made"]

    stack = toolkit.wsgi(app)
    hold_the_writers()
    for request_id in serve(stack, count):
        print(request_id, flush=True)
    print("held", flush=True)
    if mode == "exit":
        return
    if mode == "wait":
        threading.Event().wait()
    if mode == "fork":
        child = os.fork()
        if child == 0:
            let_the_writers_go()
            for request_id in serve(stack, count):
                print("child", request_id, flush=True)
            sys.exit(0)  # the exit flush writes the child's ends, and only those
        os.waitpid(child, 0)
        print("child-exited", flush=True)
        sys.stdin.readline()
        let_the_writers_go()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
