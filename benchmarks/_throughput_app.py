"""The app the ``post_throughput`` benchmark serves under gunicorn, and its gunicorn hooks.

``POST /ports`` creates one port with its four tasks in one transaction (the
app of ``post_overhead``), bare or behind the toolkit's middleware
(``RequestIdMiddleware`` + ``OperationMiddleware``), as
``TASKTOOLKIT_BENCH_STACK`` says (``bare`` or ``toolkit``). The database is
``TASKTOOLKIT_BENCH_DB_URL`` (SQLite in WAL mode, as ``post_overhead``), the
port's network ``TASKTOOLKIT_BENCH_NETWORK``.

Served as ``gunicorn -c python:benchmarks._throughput_gunicorn benchmarks._throughput_app:app``:
when a worker exits, :func:`write_lags` flushes its end writer and writes the
writer's lags (close to commit, seconds) to ``<TASKTOOLKIT_BENCH_LAGS>/<pid>.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker

from benchmarks.post_overhead import App, _wal, port_app
from tasktoolkit import orm
from tasktoolkit.middleware import OperationMiddleware, RequestIdMiddleware, flush_ends

_engine = orm.prepare_engine(create_engine(os.environ["TASKTOOLKIT_BENCH_DB_URL"]))
if _engine.dialect.name == "sqlite":
    event.listen(_engine, "connect", _wal)
_factory = sessionmaker(_engine, expire_on_commit=False)
_app = port_app(_factory, os.environ["TASKTOOLKIT_BENCH_NETWORK"])
_operations: OperationMiddleware | None = None
app: App = _app
if os.environ["TASKTOOLKIT_BENCH_STACK"] == "toolkit":
    _operations = OperationMiddleware(_app, engine=_engine)
    app = RequestIdMiddleware(_operations)


def write_lags() -> None:
    """Write the ends this process holds, then its writer's lags (for gunicorn's worker_exit)."""
    flush_ends()
    if _operations is not None:
        lags = Path(os.environ["TASKTOOLKIT_BENCH_LAGS"]) / f"{os.getpid()}.json"
        lags.write_text(json.dumps(list(_operations.ends.lags)))
