"""Many concurrent requests through a threaded WSGI server: ids never cross between requests."""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.context import is_valid_request_id
from tasktoolkit.orm import Operation, Task
from tests.middleware.apps import cluster_app
from tests.middleware.stacks import Stacks, operations_of

CLIENTS = 8
REQUESTS_PER_CLIENT = 6


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    # server_close() joins the request threads: a request's operation is
    # finished after its response is sent, by the thread that served it.
    daemon_threads = False
    block_on_close = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Served:
    """A threaded server on a free 127.0.0.1 port, running ``app``."""

    def __init__(self, app: Any) -> None:
        self.server = make_server(
            "127.0.0.1", 0, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler
        )
        self.address = ("127.0.0.1", self.server.server_port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.stopped = False

    def stop(self) -> None:
        """Stop serving and wait for every request thread to end."""
        if not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=30)


@pytest.fixture
def serve() -> Iterator[Callable[[Any], Served]]:
    """``serve(app)``: a :class:`Served` app, stopped at the end of the test."""
    started: list[Served] = []

    def start(app: Any) -> Served:
        started.append(Served(app))
        return started[-1]

    yield start
    for served in started:
        served.stop()


def request(address: tuple[str, int], method: str, path: str) -> tuple[int, str, dict[str, Any]]:
    """One plain HTTP request: ``(status, X-Request-Id, JSON body)``."""
    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        connection.request(method, path, headers={"X-Project-Id": "p1"})
        response = connection.getresponse()
        body = json.loads(response.read())
        return response.status, response.headers["X-Request-Id"], body
    finally:
        connection.close()


def test_concurrent_requests_keep_their_own_ids(
    stacks: Stacks,
    engine: Engine,
    session_factory: sessionmaker[Session],
    serve: Callable[[Any], Served],
    log_records: list[logging.LogRecord],
    operation: Callable[[str], Operation | None],
    tasks_of: Callable[[str], list[Task]],
) -> None:
    stack = stacks.wsgi(cluster_app(session_factory))
    operations = operations_of(stack)
    served = serve(stack)

    def client(n: int) -> list[tuple[str, str, int, str, dict[str, Any]]]:
        done = []
        for i in range(REQUESTS_PER_CLIENT):
            method, path = ("POST", "/clusters") if i % 2 == 0 else ("GET", f"/look/{n}-{i}")
            status, rid, body = request(served.address, method, path)
            done.append((method, path, status, rid, body))
        return done

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for batch in pool.map(client, range(CLIENTS)) for r in batch]
        served.stop()
    finally:
        operations.close()

    assert len(results) == CLIENTS * REQUESTS_PER_CLIENT
    ids = [rid for *_, rid, _ in results]
    assert len(set(ids)) == len(ids)
    assert all(is_valid_request_id(rid) for rid in ids)

    by_cluster: dict[str, str] = {}
    by_path: dict[str, str] = {}
    for method, path, status, rid, body in results:
        # the app saw this request's id in the environ and in the context
        assert body["environ_request_id"] == body["context_request_id"] == rid
        if method == "POST":
            assert status == 201 and body["operation_id"] == rid
            by_cluster[body["cluster"]] = rid
        else:
            assert status == 200 and body["operation_id"] is None
            by_path[path] = rid

    # every log line carries the id of the request that made it
    assert len(log_records) == len(results)
    for record in log_records:
        if record.msg == "created cluster %s":
            assert record.request_id == by_cluster[record.args[0]]  # type: ignore[attr-defined,index]
            assert record.operation_id == record.request_id  # type: ignore[attr-defined]
        else:
            assert record.request_id == by_path[record.args[1]]  # type: ignore[attr-defined,index]
            assert record.operation_id == "-"  # type: ignore[attr-defined]

    # every task belongs to the operation of the request that spawned it
    for cluster_id, rid in by_cluster.items():
        tasks = tasks_of(rid)
        assert len(tasks) == 2
        assert {t.resource_id for t in tasks} == {cluster_id}
        op = operation(rid)
        assert op is not None
        assert (op.state, op.http_status, op.task_counts["pending"]) == ("running", 201, 2)
