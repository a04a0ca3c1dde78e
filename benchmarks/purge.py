"""Purging a million expired rows: short statements, and an app writing beside it unharmed.

Fills the tasks table with 1,000,000 expired finished tasks (50,000 with
``--quick``), plus 20,000 that have not expired and 50,000 expired
operations, refreshes the statistics, then runs :func:`tasktoolkit.orm.purge`
(batches of 1,000) and times every statement it sends, from
``before_cursor_execute`` to ``after_cursor_execute``.

The purge runs in two halves: the first half of the expired tasks alone (``older_than``),
then the rest and the operations while an app writes beside it: a process of its own, on its
own engine, spawning one pending task a transaction
(an ``INSERT`` and a commit) every 10 ms into the same table. The same writer
runs alone for a while before the purge and again after it (the two pooled
as the writer "alone"), so the machine's drift touches both sides alike.

Figures:

- ``purge_rows_per_s``: rows deleted (tasks and operations) per second;
- ``purge_p999_statement_ms``: the 99.9th percentile of all its statements (bar: <= 250),
  and of each half (``purge_p999_statement_ms_alone``,
  ``purge_p999_statement_ms_beside_writer``: a statement's time includes any wait for
  the writer's locks, on SQLite its one write lock);
- ``purge_max_statement_ms``: the slowest single statement (reported beside it);
- ``purge_p99_statement_ms``: the 99th percentile of all its statements;
- ``purge_writer_p99_ratio``: the writer's 99th percentile latency beside the purge over
  the same writer's alone (bar: <= 2), with ``purge_writer_p99_ms_alone`` and
  ``purge_writer_p99_ms_beside``;
- ``purge_load_avg``: the machine's load average (1 minute) over the run.

It also prints the slowest statements with when they ran (seconds into the
purge) and how many rows they named, to set beside the server's own account.

Afterwards it checks that exactly the unexpired rows (and the writer's) are left.

Warning: drops and re-creates the toolkit's and the test models' tables at ``--db-url``.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
import uuid
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

from sqlalchemy import create_engine, event, func, insert, select, text
from sqlalchemy.engine import Engine

from benchmarks._harness import Bench, fresh_engine, load_average, percentile
from tasktoolkit import Settings, orm
from tasktoolkit.orm._records import operations_table, tasks_table
from tasktoolkit.orm._types import utcnow
from tests import models  # noqa: F401  (the test resource types, as in the other benchmarks)

NAME = "purge"
CHUNK = 10_000
#: The writer beside the purge: one transaction every so many seconds.
PACE = 0.010


class Writer:
    """An app writing beside the purge, in a process of its own (its own interpreter lock
    and pool): one pending task per transaction, every :data:`PACE` seconds, while a phase
    runs; each transaction's seconds kept per phase."""

    def __init__(self, url: str) -> None:
        self._pipe, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_write, args=(url, child), daemon=True
        )
        self._process.start()
        self.latencies: dict[str, list[float]] = {}
        self.errors = 0

    @property
    def written(self) -> int:
        return sum(len(values) for values in self.latencies.values())

    def start(self, phase: str) -> None:
        self._pipe.send(phase)

    def stop(self) -> None:
        self._pipe.send("")

    def alone(self, phase: str, seconds: float) -> None:
        """Write for ``seconds`` with nothing else running."""
        self.start(phase)
        time.sleep(seconds)
        self.stop()

    def close(self) -> None:
        """Stop the process and collect what it measured."""
        self._pipe.send(None)
        self.latencies, self.errors = self._pipe.recv()
        self._process.join(30)


def _write(url: str, pipe: Connection) -> None:
    """The writer's process: a phase's name starts writing, ``""`` pauses, ``None`` ends
    (answered with the latencies per phase and the failed writes)."""
    engine = orm.prepare_engine(create_engine(url))
    statement = insert(tasks_table)
    latencies: dict[str, list[float]] = {}
    errors = 0
    phase = ""
    tick = time.perf_counter()
    while True:
        if pipe.poll(max(0.0, tick - time.perf_counter()) if phase else None):
            message = pipe.recv()
            if message is None:
                break
            phase, tick = message, time.perf_counter()
            continue
        now = utcnow()
        row = {
            "id": str(uuid.uuid4()),
            "resource_type": "cluster",
            "resource_id": "written-beside",
            "name": "build",
            "state": "pending",
            "created_at": now,
            "updated_at": now,
        }
        started = time.perf_counter()
        try:
            with engine.begin() as conn:
                conn.execute(statement, row)
        except Exception:  # a deadlock or a timeout beside the purge: counted, not fatal
            errors += 1
        else:
            latencies.setdefault(phase, []).append(time.perf_counter() - started)
        tick += PACE
    engine.dispose()
    pipe.send((latencies, errors))


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
    loads = [load_average()]
    writer = Writer(bench.db_url)
    alone_s = 3.0 if bench.quick else 15.0
    writer.alone("before", alone_s)

    # (the purge's half, statement, seconds it took)
    timings: list[tuple[str, str, float]] = []
    # (seconds into the purge, statement, seconds it took, rows it named)
    timeline: list[tuple[float, str, float, int]] = []
    began = time.perf_counter()
    half = ["alone"]

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info["tasktoolkit.bench.t0"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        start = conn.info.pop("tasktoolkit.bench.t0")
        elapsed = time.perf_counter() - start
        kind = statement.lstrip().split(None, 1)[0].upper()
        timings.append((half[0], kind, elapsed))
        timeline.append((start - began, kind, elapsed, _rows_named(kind, parameters)))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    settings = Settings(batch_size=1000)
    # The first half of the expired tasks alone (they expired at least this long ago),
    # then the rest and the operations beside the writer.
    first_half = timedelta(days=30) - timedelta(seconds=expired // 2)
    try:
        results = [orm.purge(engine, settings=settings, older_than=first_half)]
        half[0] = "beside"
        writer.start("beside")
        try:
            results.append(orm.purge(engine, settings=settings))
        finally:
            writer.stop()
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    tasks_deleted = sum(r.tasks for r in results)
    operations_deleted = sum(r.operations for r in results)
    writer.alone("after", alone_s)
    writer.close()
    loads.append(load_average())
    with engine.connect() as conn:
        left = conn.execute(select(func.count()).select_from(tasks_table)).scalar_one()
        server = _server_memory(conn)
    orm.drop_all(engine)
    engine.dispose()
    if (tasks_deleted, operations_deleted, left) != (expired, operations, kept + writer.written):
        raise RuntimeError(
            f"purge deleted {tasks_deleted} tasks, {operations_deleted} operations "
            f"and left {left}; expected {expired}, {operations} and {kept} + {writer.written}"
        )
    deleted = tasks_deleted + operations_deleted
    seconds = sum(r.seconds for r in results)
    rate = deleted / seconds
    every = sorted(t for _, _, t in timings)
    worst = every[-1]
    p99 = every[int(0.99 * (len(every) - 1))]
    p999 = percentile(every, 0.999)
    halves = {name: sorted(t for h, _, t in timings if h == name) for name in ("alone", "beside")}
    alone = writer.latencies["before"] + writer.latencies["after"]
    beside = writer.latencies["beside"]
    writer_p99 = {"alone": percentile(alone, 0.99), "beside": percentile(beside, 0.99)}
    rows = []
    for name, kind in sorted({(h, k) for h, k, _ in timings}):
        times = sorted(t for h, k, t in timings if (h, k) == (name, kind))
        rows.append(
            (
                f"{kind}, {name}",
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
            ("seconds", seconds),
            ("rows per second", rate),
            ("statements, p99 ms", p99 * 1000),
            ("statements, p99.9 ms", p999 * 1000),
            ("slowest statement, ms", worst * 1000),
            *(
                (f"{name}: statements, p99.9 / slowest ms", f"{p:,.0f} / {m:,.0f}")
                for name, values in halves.items()
                for p, m in [(percentile(values, 0.999) * 1000, values[-1] * 1000)]
            ),
            *server,
            ("load average (1 min), mean", statistics.mean(loads)),
        ],
        ["what", "value"],
    )
    bench.table(
        f"an app writing beside the purge (a transaction every {PACE * 1000:.0f} ms)",
        [
            (
                phase,
                len(values),
                statistics.median(values) * 1000,
                percentile(values, 0.99) * 1000,
                max(values) * 1000,
            )
            for phase, values in (("alone (before and after)", alone), ("beside the purge", beside))
        ]
        + [("p99 beside / alone", "", "", writer_p99["beside"] / writer_p99["alone"], "")]
        + [("failed writes", writer.errors, "", "", "")],
        ["writer", "transactions", "median ms", "p99 ms", "max ms"],
    )
    return {
        "purge_rows_per_s": rate,
        "purge_max_statement_ms": worst * 1000,
        "purge_p99_statement_ms": p99 * 1000,
        "purge_p999_statement_ms": p999 * 1000,
        "purge_p999_statement_ms_alone": percentile(halves["alone"], 0.999) * 1000,
        "purge_p999_statement_ms_beside_writer": percentile(halves["beside"], 0.999) * 1000,
        "purge_writer_p99_ms_alone": writer_p99["alone"] * 1000,
        "purge_writer_p99_ms_beside": writer_p99["beside"] * 1000,
        "purge_writer_p99_ratio": writer_p99["beside"] / writer_p99["alone"],
        "purge_load_avg": statistics.mean(loads),
    }


def _rows_named(kind: str, parameters: Any) -> int:
    """The rows a purge statement named: the ids of a ``DELETE``, the limit of a ``SELECT``."""
    values = list(parameters.values() if isinstance(parameters, dict) else parameters or ())
    if kind == "DELETE":
        return len(values) - 1  # the ids, and the cutoff
    return next((int(v) for v in reversed(values) if isinstance(v, int)), 0)
