"""What the operation middleware costs a mutating request, beside the same request without it.

The request is ``POST /ports`` whose handler (the app's own work) creates one
port with its four tasks in one transaction, as the sample app does. It is
timed side by side, in one run, bare and behind the whole middleware stack
(``RequestIdMiddleware`` + ``OperationMiddleware``), which writes the
operation before the app runs and records the response status after the
body is closed. The figure is the median time with over the time without
(bar: <= 1.5). The statements each sends before the response starts are
counted too (bar: one more than the app's own work).

Warning: drops and re-creates the toolkit's and the sample's tables in the
database at ``--db-url``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from benchmarks._harness import Bench, drain, fresh_engine, interleaved
from sample_app.models import PORT_CREATE_TASKS, Network, Port
from tasktoolkit import orm
from tasktoolkit.middleware import OperationMiddleware, RequestIdMiddleware

NAME = "post_overhead"

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def port_app(factory: sessionmaker[Session], network_id: str) -> App:
    """The app's own work: create a port and spawn its four tasks, in one transaction."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with factory() as session:
            port = Port(network_id=network_id, name="bench", project_id="bench")
            session.add(port)
            port.spawn_tasks(PORT_CREATE_TASKS)
            session.commit()
            body = json.dumps({"port": {"id": port.id}}).encode()
        start_response(
            "201 Created",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


def _environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/ports",
        "QUERY_STRING": "",
        "CONTENT_LENGTH": "0",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "localhost",
        "HTTP_X_PROJECT_ID": "bench",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def request(app: App, on_start: Callable[[], None] | None = None) -> Callable[[], None]:
    """One POST as a server does it: iterate the body, then close it."""

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        if on_start is not None:
            on_start()

    def call() -> None:
        drain(app(_environ(), start_response))

    return call


def statements_before_response(app: App) -> int:
    """How many statements one request sends before ``start_response``."""
    counted: list[int] = [0]
    started: list[bool] = [False]

    def count(*args: Any) -> None:
        if not started[0]:
            counted[0] += 1

    def on_start() -> None:
        started[0] = True

    event.listen(Engine, "before_cursor_execute", count)
    try:
        request(app, on_start)()
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    return counted[0]


def _no_flush(dbapi_connection: Any, record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        if dbapi_connection.__class__.__module__.startswith("sqlite3"):
            cursor.execute("PRAGMA synchronous = OFF")
        else:
            cursor.execute("SET synchronous_commit TO off")
    finally:
        cursor.close()
    dbapi_connection.commit()


def _measure(engine: Engine, quick: bool) -> tuple[dict[str, float], dict[str, int]]:
    """Median seconds and statements before the response, bare and with the middleware."""
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        network = Network(name="bench", project_id="bench")
        session.add(network)
        session.commit()
        network_id = network.id
    app = port_app(factory, network_id)
    operations = OperationMiddleware(app, engine=engine)
    stack = RequestIdMiddleware(operations)
    try:
        candidates = {"bare app": request(app), "with middleware": request(stack)}
        for call in candidates.values():  # warm up: pools, dialect caches
            for _ in range(20):
                call()
        statements = {
            "bare app": statements_before_response(app),
            "with middleware": statements_before_response(stack),
        }
        rounds, per_round = (40, 3) if quick else (200, 5)
        times = interleaved(candidates, rounds=rounds, per_round=per_round)
    finally:
        operations.close()
    return times, statements


def run(bench: Bench) -> dict[str, float]:
    engine = fresh_engine(bench)
    try:
        times, statements = _measure(engine, bench.quick)
        # The same on connections whose commits do not wait for the disk, where
        # the database allows that per connection (not MariaDB): what the
        # middleware costs apart from disk flushes.
        relaxed: dict[str, float] | None = None
        if engine.dialect.name in ("postgresql", "sqlite"):
            fast = orm.prepare_engine(create_engine(bench.db_url))
            event.listen(fast, "connect", _no_flush)
            try:
                relaxed, _ = _measure(fast, bench.quick)
            finally:
                fast.dispose()
    finally:
        orm.drop_all(engine)
        engine.dispose()
    ratio = times["with middleware"] / times["bare app"]
    rows: list[tuple[object, ...]] = [
        (name, times[name] * 1e3, times[name] / times["bare app"], statements[name])
        for name in times
    ]
    if relaxed is not None:
        rows += [
            (
                f"{name}, commits not flushed",
                relaxed[name] * 1e3,
                relaxed[name] / relaxed["bare app"],
                statements[name],
            )
            for name in relaxed
        ]
    bench.table(
        "POST /ports (one port, four tasks): with the middleware vs without",
        rows,
        ["stack", "ms/request", "vs bare", "statements before response"],
    )
    figures = {
        "post_bare_ms": times["bare app"] * 1e3,
        "post_with_middleware_ms": times["with middleware"] * 1e3,
        "post_ratio_vs_bare": ratio,
        "post_extra_statements_before_response": float(
            statements["with middleware"] - statements["bare app"]
        ),
    }
    if relaxed is not None:
        figures["post_ratio_vs_bare_commits_not_flushed"] = (
            relaxed["with middleware"] / relaxed["bare app"]
        )
    return figures
