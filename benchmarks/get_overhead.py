"""Per-request overhead of the middleware on a GET, beside oslo.middleware's ``RequestId``.

Times, side by side in one run, a GET of a bare WSGI app; of the same app
behind oslo.middleware's ``RequestId``; behind a minimal middleware that only
calls ``uuid.uuid4()`` (the floor, for reference); and behind ours as deployed
(``RequestIdMiddleware`` around ``OperationMiddleware``, which a GET passes
through without touching the database). The overhead is each one's time
minus the bare app's; the figure that counts is ours over oslo's (bar:
<= 0.25).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import create_engine

from benchmarks._harness import Bench, drain, interleaved
from tasktoolkit.middleware import OperationMiddleware, RequestIdMiddleware

NAME = "get_overhead"

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

ENVIRON = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/ports/1",
    "QUERY_STRING": "",
    "SERVER_NAME": "localhost",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "localhost",
    "HTTP_X_PROJECT_ID": "project-1",
    "HTTP_X_USER_ID": "user-1",
    "wsgi.url_scheme": "http",
    "wsgi.multithread": True,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}


def bare(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
    return [b"{}"]


class UUIDOnly:
    """The floor: a middleware that only makes a uuid4 and puts it in the environ."""

    def __init__(self, app: App) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ["x.request_id"] = str(uuid.uuid4())
        return self.app(environ, start_response)


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def request(app: App) -> Callable[[], None]:
    """One GET as a server does it: a fresh environ, iterate the body, close it."""

    def call() -> None:
        drain(app(dict(ENVIRON), _start_response))

    return call


def run(bench: Bench) -> dict[str, float]:
    try:
        # Imported here so that the other benchmarks run without it.
        from oslo_middleware.request_id import RequestId
    except ImportError:
        raise SystemExit(
            "get_overhead needs oslo.middleware: python -m pip install --group bench"
        ) from None
    engine = create_engine(bench.db_url)
    operations = OperationMiddleware(bare, engine=engine)
    try:
        candidates = {
            "bare app": request(bare),
            "uuid4 only": request(UUIDOnly(bare)),
            "oslo RequestId": request(RequestId(bare)),
            "ours: RequestId": request(RequestIdMiddleware(bare)),
            "ours: RequestId + Operation": request(RequestIdMiddleware(operations)),
        }
        for call in candidates.values():  # warm up
            for _ in range(2000):
                call()
        rounds, per_round = (60, 200) if bench.quick else (300, 500)
        times = interleaved(candidates, rounds=rounds, per_round=per_round)
    finally:
        operations.close()
        engine.dispose()
    base = times["bare app"]
    overhead = {name: (t - base) * 1e6 for name, t in times.items()}
    oslo = overhead["oslo RequestId"]
    ours = overhead["ours: RequestId + Operation"]
    bench.table(
        "GET overhead per request (median of interleaved rounds)",
        [
            (name, times[name] * 1e6, overhead[name], overhead[name] / oslo if oslo else 0.0)
            for name in candidates
        ],
        ["stack", "us/request", "overhead us", "vs oslo"],
    )
    return {
        "get_overhead_us": ours,
        "get_overhead_request_id_only_us": overhead["ours: RequestId"],
        "get_overhead_oslo_us": oslo,
        "get_overhead_uuid4_us": overhead["uuid4 only"],
        "get_overhead_ratio_vs_oslo": ours / oslo,
    }
