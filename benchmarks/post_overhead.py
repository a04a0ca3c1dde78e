"""What the operation middleware costs a mutating request, beside the same request without it.

The request is ``POST /ports`` whose handler (the app's own work) creates one
port with its four tasks in one transaction, as the sample app does. Three
stacks are timed side by side, in one run:

- **bare**: the app alone;
- **with the middleware**: ``RequestIdMiddleware`` + ``OperationMiddleware``,
  whose operation rides in the app's transaction (the spawn writes it) and
  whose end is handed, once the body is closed, to the process's end writer,
  which writes the ends it holds in one statement a round, off the request's
  thread;
- **Nova's pattern**: the same request recorded the way Nova records an
  instance action: an ``INSERT`` committed before the app's work, an
  ``UPDATE`` after it.

Figures: ``post_ratio_vs_bare`` (bar: 1.25 on PostgreSQL and SQLite in WAL
mode, 1.5 on MariaDB), ``post_ratio_vs_nova_pattern`` (bar: under 1), and
``post_extra_statements_before_response``: the statements the middleware
sends before the response starts, on its own connections (bar: 0). The
statements the operation adds to the app's own transaction (its spawn writes
the operation, in the statement that counted its tasks before) are shown
beside them. On SQLite these are measured in WAL mode (``journal_mode=WAL``,
``synchronous=NORMAL``, as the docs recommend for an embedded deployment), and
``post_ratio_vs_bare_default_journal`` with SQLite's default journal beside
them. PostgreSQL and MariaDB run with their default settings.

Each stack is timed over runs of POSTs, and a run of the middleware's ends
only once every end of it has landed (the end writer flushed, inside the
timing): the ends are not left for after the clock stops. Beside it, the
middleware's ``close()`` (the hand-over of the end) within the same calls,
``post_end_after_body_ms``, and ``post_end_lag_p99_ms``: the 99th percentile
of the writer's lag, from a request's close to its end's commit (bar: 50).
``post_overhead_load_avg``: the machine's load average (1 minute) over the
run, for the figures' context.

Warning: drops and re-creates the toolkit's and the sample's tables in the
database at ``--db-url``.
"""

from __future__ import annotations

import io
import json
import statistics
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from benchmarks._harness import Bench, drain, fresh_engine, interleaved, load_average
from sample_app.models import PORT_CREATE_TASKS, Network, Port
from tasktoolkit import orm
from tasktoolkit.middleware import OperationMiddleware, RequestIdMiddleware

NAME = "post_overhead"

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: Nova's ``instance_actions`` as Nova declares it (``nova/db/main/models.py``,
#: ``InstanceAction`` with ``NovaBase``'s timestamps and ``SoftDeleteMixin``): its columns
#: and its three indexes. Its foreign key to ``instances.uuid`` is left out (there is no
#: instances table here): the peer's cost is its own table and its indexes.
_NOVA = MetaData()
nova_actions = Table(
    "bench_instance_actions",
    _NOVA,
    Column("created_at", DateTime),
    Column("updated_at", DateTime),
    Column("deleted_at", DateTime),
    Column("deleted", Integer, default=0),
    Column("id", Integer, primary_key=True, nullable=False, autoincrement=True),
    Column("action", String(255)),
    Column("instance_uuid", String(36)),
    Column("request_id", String(255)),
    Column("user_id", String(255)),
    Column("project_id", String(255)),
    Column("start_time", DateTime),
    Column("finish_time", DateTime),
    Column("message", String(255)),
    Index("bench_instance_uuid_idx", "instance_uuid"),
    Index("bench_request_id_idx", "request_id"),
    Index("bench_instance_actions_instance_uuid_updated_at_idx", "instance_uuid", "updated_at"),
)


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


def nova_pattern(app: App, engine: Engine) -> App:
    """``app`` recorded as Nova records an instance action.

    ``action_start``: one ``INSERT`` of the action, committed before the work.
    ``action_finish``: in one transaction, an ``UPDATE`` of its ``finish_time`` found by
    instance and request (and ``deleted = 0``, as Nova's queries of a soft-deleted model
    add), then the row read back (Nova's ``query.one()``).
    """
    c = nova_actions.c
    insert = nova_actions.insert()
    found = (c.instance_uuid == bindparam("instance")) & (c.request_id == bindparam("request"))
    found = found & (c.deleted == 0)
    finish = (
        nova_actions.update()
        .where(found)
        .values(finish_time=bindparam("finished"), updated_at=bindparam("finished"))
    )
    read_back = select(nova_actions).where(found)

    def recorded(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        instance, request_id = str(uuid.uuid4()), f"req-{uuid.uuid4()}"
        keys = {"instance": instance, "request": request_id}
        now = _naive_utcnow()
        with engine.begin() as conn:
            conn.execute(
                insert,
                {
                    "action": "create",
                    "instance_uuid": instance,
                    "request_id": request_id,
                    "project_id": "bench",
                    "user_id": "bench",
                    "start_time": now,
                    "created_at": now,
                    "deleted": 0,
                },
            )
        body = list(app(environ, start_response))
        with engine.begin() as conn:
            if conn.execute(finish, {**keys, "finished": _naive_utcnow()}).rowcount != 1:
                raise RuntimeError("the instance action was not found")
            conn.execute(read_back, keys).one()
        return body

    return recorded


def _naive_utcnow() -> datetime:
    # Nova keeps naive UTC times.
    return datetime.now(UTC).replace(tzinfo=None)


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


def request(
    app: App,
    on_start: Callable[[], None] | None = None,
    closes: list[float] | None = None,
) -> Callable[[], None]:
    """One POST as a server does it: iterate the body, then close it.

    :param closes: where to append the seconds each ``close()`` took: for the
        middleware, the end of the request, written after the body.
    """

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        if on_start is not None:
            on_start()

    def call() -> None:
        body = app(_environ(), start_response)
        if closes is None:
            drain(body)
            return
        for _ in body:
            pass
        started = time.perf_counter()
        getattr(body, "close", lambda: None)()
        closes.append(time.perf_counter() - started)

    return call


def statements_before_response(app: App, middleware: OperationMiddleware | None) -> tuple[int, int]:
    """Statements one request sends before ``start_response``: the middleware's own
    (on its connections), and all of them."""
    own: list[int] = [0, 0]
    started: list[bool] = [False]
    writer = None if middleware is None else middleware._writer

    def count(conn: Any, *args: Any) -> None:
        if not started[0]:
            own[1] += 1
            if writer is not None and conn.engine is writer:
                own[0] += 1

    def on_start() -> None:
        started[0] = True

    event.listen(Engine, "before_cursor_execute", count)
    try:
        request(app, on_start)()
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    return own[0], own[1]


def _wal(dbapi_connection: Any, record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


#: The middleware's ``close()``: the end of the request, one statement after the body.
_END = "end after the body"


#: The writer's lag, close to commit, 99th percentile.
_LAG = "end lag p99"
#: POSTs in one timed run (the middleware's ends all landed before its run's clock stops).
_RUN = 5


def _runs(post: Callable[[], None], flush: Callable[[], object] | None) -> Callable[[], None]:
    """A run of :data:`_RUN` POSTs, then (the middleware's) the writer's flush."""

    def run() -> None:
        for _ in range(_RUN):
            post()
        if flush is not None:
            flush()

    return run


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _measure(engine: Engine, quick: bool) -> tuple[dict[str, float], dict[str, tuple[int, int]]]:
    """Median seconds per POST and statements before the response, of each stack; as
    :data:`_END`, the median seconds of the middleware's ``close()``; as :data:`_LAG`,
    the 99th percentile of the end writer's lag."""
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        network = Network(name="bench", project_id="bench")
        session.add(network)
        session.commit()
        network_id = network.id
    app = port_app(factory, network_id)
    operations = OperationMiddleware(app, engine=engine)
    stacks: dict[str, App] = {
        "bare app": app,
        "with middleware": RequestIdMiddleware(operations),
        "nova pattern": nova_pattern(app, engine),
    }
    try:
        closes: list[float] = []
        candidates = {
            name: request(stack, closes=closes if name == "with middleware" else None)
            for name, stack in stacks.items()
        }
        for call in candidates.values():  # warm up: pools, dialect caches
            for _ in range(20):
                call()
        operations.flush_ends()
        closes.clear()
        statements = {
            name: statements_before_response(
                stack, operations if name == "with middleware" else None
            )
            for name, stack in stacks.items()
        }
        operations.flush_ends()
        operations.ends.lags.clear()
        runs = {
            name: _runs(call, operations.flush_ends if name == "with middleware" else None)
            for name, call in candidates.items()
        }
        rounds = 40 if quick else 200
        times = {name: seconds / _RUN for name, seconds in interleaved(runs, rounds=rounds).items()}
        lags = list(operations.ends.lags)
    finally:
        operations.close()
    times[_END] = statistics.median(closes)
    times[_LAG] = _p99(lags)
    return times, statements


def _engine(bench: Bench, *, wal: bool) -> Engine:
    engine = fresh_engine(bench)
    _NOVA.drop_all(engine)
    _NOVA.create_all(engine)
    if wal:
        engine.dispose()
        event.listen(engine, "connect", _wal)
    return engine


def _run_on(bench: Bench, *, wal: bool) -> tuple[dict[str, float], dict[str, tuple[int, int]]]:
    engine = _engine(bench, wal=wal)
    try:
        return _measure(engine, bench.quick)
    finally:
        _NOVA.drop_all(engine)
        orm.drop_all(engine)
        engine.dispose()


def run(bench: Bench) -> dict[str, float]:
    sqlite = bench.backend == "sqlite"
    loads = [load_average()]
    times, statements = _run_on(bench, wal=sqlite)
    loads.append(load_average())
    end = times.pop(_END)
    lag = times.pop(_LAG)
    rows: list[tuple[object, ...]] = [
        (name, times[name] * 1e3, times[name] / times["bare app"], *statements[name])
        for name in times
    ]
    rows.insert(2, (f"  of which {_END}", end * 1e3, end / times["bare app"], "", ""))
    rows.insert(3, (f"  {_LAG} (close to commit)", lag * 1e3, "", "", ""))
    figures = {
        "post_bare_ms": times["bare app"] * 1e3,
        "post_with_middleware_ms": times["with middleware"] * 1e3,
        "post_nova_pattern_ms": times["nova pattern"] * 1e3,
        "post_ratio_vs_bare": times["with middleware"] / times["bare app"],
        "post_ratio_vs_nova_pattern": times["with middleware"] / times["nova pattern"],
        "post_end_after_body_ms": end * 1e3,
        "post_end_lag_p99_ms": lag * 1e3,
        "post_ratio_vs_bare_before_the_end": (times["with middleware"] - end) / times["bare app"],
        "post_extra_statements_before_response": float(statements["with middleware"][0]),
        "post_app_statements_for_the_operation": float(
            statements["with middleware"][1] - statements["bare app"][1]
        ),
    }
    if sqlite:
        default, _ = _run_on(bench, wal=False)
        del default[_END], default[_LAG]
        rows += [
            (
                f"{name}, default journal",
                default[name] * 1e3,
                default[name] / default["bare app"],
                "",
                "",
            )
            for name in default
        ]
        figures["post_ratio_vs_bare_default_journal"] = (
            default["with middleware"] / default["bare app"]
        )
    figures["post_overhead_load_avg"] = statistics.mean(loads)
    rows.append(("load average (1 min), mean", figures["post_overhead_load_avg"], "", "", ""))
    bench.table(
        "POST /ports (one port, four tasks): bare, with the middleware, Nova's pattern"
        + (" (WAL)" if sqlite else ""),
        rows,
        ["stack", "ms/request", "vs bare", "middleware statements before", "all before"],
    )
    return figures
