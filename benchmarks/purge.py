"""Purging a million expired rows, with no single statement over 250 ms.

Fills the tasks table with 1,000,000 expired finished tasks (50,000 with
``--quick``), plus 20,000 that have not expired and 50,000 expired
operations, refreshes the statistics, then runs :func:`tasktoolkit.orm.purge`
(batches of 1,000) and times every statement it sends, from
``before_cursor_execute`` to ``after_cursor_execute``.

Figures:

- ``purge_rows_per_s``: rows deleted (tasks and operations) per second;
- ``purge_max_statement_ms``: the slowest single statement (bar: <= 250);
- ``purge_p99_statement_ms``: the 99th percentile of all its statements.

It also prints the slowest statements with when they ran (seconds into the
purge) and how many rows they named, to set beside the server's own account.

Afterwards it checks that exactly the unexpired rows are left.

Warning: drops and re-creates the toolkit's and the test models' tables at ``--db-url``.
"""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import event, func, insert, select, text
from sqlalchemy.engine import Engine

from benchmarks._harness import Bench, fresh_engine
from tasktoolkit import Settings, orm
from tasktoolkit.orm._records import operations_table, tasks_table
from tasktoolkit.orm._types import utcnow
from tests import models  # noqa: F401  (the test resource types, as in the other benchmarks)

NAME = "purge"
CHUNK = 10_000


def _fill(engine: Engine, table: Any, count: int, row: Any) -> None:
    for start in range(0, count, CHUNK):
        with engine.begin() as conn:
            conn.execute(insert(table), [row(n) for n in range(start, min(count, start + CHUNK))])


def _analyze(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in (tasks_table, operations_table):
            if engine.dialect.name == "postgresql":
                conn.execute(text(f"ANALYZE {table.name}"))
            elif engine.dialect.name in ("mysql", "mariadb"):
                conn.execute(text(f"ANALYZE TABLE {table.name}"))
            else:
                conn.execute(text(f"ANALYZE {table.name}"))


def _server_memory(conn: Any) -> list[tuple[str, str]]:
    """The server setting that decides the purge's speed on MariaDB, for the table."""
    if conn.dialect.name not in ("mysql", "mariadb"):
        return []
    size = conn.execute(text("SELECT @@innodb_buffer_pool_size")).scalar_one()
    # 128 MB (the default) holds a fraction of a million rows: see docs/performance.md.
    return [("innodb_buffer_pool_size, MB", f"{int(size) // 2**20:,}")]


def run(bench: Bench) -> dict[str, float]:
    engine = fresh_engine(bench)
    expired = 50_000 if bench.quick else 1_000_000
    kept = 2_000 if bench.quick else 20_000
    operations = 5_000 if bench.quick else 50_000
    now = utcnow()

    def task(n: int, expires: Any) -> dict[str, Any]:
        finished = now - timedelta(days=31) + timedelta(seconds=n % 2_000_000)
        return {
            "id": str(uuid.uuid4()),
            "resource_type": "cluster",
            "resource_id": f"c{n % 5000}",
            "name": "build",
            "state": "succeeded",
            "created_at": finished,
            "updated_at": finished,
            "finished_at": finished,
            "expires_at": expires(finished),
        }

    started = time.perf_counter()
    _fill(engine, tasks_table, expired, lambda n: task(n, lambda f: f + timedelta(days=1)))
    _fill(engine, tasks_table, kept, lambda n: task(n, lambda f: now + timedelta(days=1)))
    _fill(
        engine,
        operations_table,
        operations,
        lambda n: {
            "id": f"req-{uuid.uuid4()}",
            "method": "POST",
            "path": "/clusters",
            "state": "succeeded",
            "created_at": now - timedelta(days=3),
            "updated_at": now - timedelta(days=3),
            "finished_at": now - timedelta(days=3),
            "expires_at": now - timedelta(days=2, seconds=n),
        },
    )
    _analyze(engine)
    fill_s = time.perf_counter() - started

    timings: list[tuple[str, float]] = []
    # (seconds into the purge, statement, seconds it took, rows it named)
    timeline: list[tuple[float, str, float, int]] = []
    began = time.perf_counter()

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info["tasktoolkit.bench.t0"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        start = conn.info.pop("tasktoolkit.bench.t0")
        elapsed = time.perf_counter() - start
        kind = statement.lstrip().split(None, 1)[0].upper()
        timings.append((kind, elapsed))
        timeline.append((start - began, kind, elapsed, _rows_named(kind, parameters)))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        result = orm.purge(engine, settings=Settings(batch_size=1000))
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    with engine.connect() as conn:
        left = conn.execute(select(func.count()).select_from(tasks_table)).scalar_one()
        server = _server_memory(conn)
    orm.drop_all(engine)
    engine.dispose()
    if (result.tasks, result.operations, left) != (expired, operations, kept):
        raise RuntimeError(
            f"purge deleted {result.tasks} tasks, {result.operations} operations "
            f"and left {left}; expected {expired}, {operations} and {kept}"
        )
    deleted = result.tasks + result.operations
    rate = deleted / result.seconds
    worst = max(t for _, t in timings)
    every = sorted(t for _, t in timings)
    p99 = every[int(0.99 * (len(every) - 1))]
    rows = []
    for kind in sorted({k for k, _ in timings}):
        times = sorted(t for k, t in timings if k == kind)
        rows.append(
            (
                kind,
                len(times),
                statistics.median(times) * 1000,
                times[int(0.99 * (len(times) - 1))] * 1000,
                times[-1] * 1000,
            )
        )
    bench.table(
        f"purge of {expired:,} expired tasks and {operations:,} operations "
        f"({kept:,} unexpired kept; filled in {fill_s:.0f} s)",
        rows,
        ["statement", "count", "median ms", "p99 ms", "max ms"],
    )
    bench.table(
        "the slowest statements",
        [
            (f"{at:.1f}", kind, elapsed * 1000, named)
            for at, kind, elapsed, named in sorted(timeline, key=lambda s: -s[2])[:8]
        ],
        ["s into the purge", "statement", "ms", "rows named"],
    )
    bench.table(
        "purge",
        [
            ("rows deleted", deleted),
            ("seconds", result.seconds),
            ("rows per second", rate),
            ("statements, p99 ms", p99 * 1000),
            ("slowest statement, ms", worst * 1000),
            *server,
        ],
        ["what", "value"],
    )
    return {
        "purge_rows_per_s": rate,
        "purge_max_statement_ms": worst * 1000,
        "purge_p99_statement_ms": p99 * 1000,
    }


def _rows_named(kind: str, parameters: Any) -> int:
    """The rows a purge statement named: the ids of a ``DELETE``, the limit of a ``SELECT``."""
    values = list(parameters.values() if isinstance(parameters, dict) else parameters or ())
    if kind == "DELETE":
        return len(values) - 1  # the ids, and the cutoff
    return next((int(v) for v in reversed(values) if isinstance(v, int)), 0)
