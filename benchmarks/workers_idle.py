"""What idle database workers cost the database, and how soon a waiting one starts a task.

4 worker processes (``multiprocessing`` 'spawn') wait for tasks with
``Worker.claim(wait=...)``: on PostgreSQL they sleep on the process's
``LISTEN`` connection until the spawning transaction's ``NOTIFY``; on SQLite
and MariaDB they poll, 50 ms after a look, then twice as long, up to 1 s.

- Idle: nothing is spawned for 10 s (3 s with ``--quick``); each worker counts
  the statements (and commits) it sends.
- Latency: then tasks are spawned one at a time, each once every worker is
  waiting again; a task's spawn-to-start latency runs from just after its
  spawning commit to the return of the claim that started it (one clock: one
  machine).

Figures:

- ``idle_statements_per_s_per_worker`` (bar on PostgreSQL: < 1);
- ``spawn_to_start_p50_ms``, ``spawn_to_start_p99_ms``.

Warning: drops and re-creates the toolkit's and the test models' tables at ``--db-url``.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session

from benchmarks._harness import Bench, fresh_engine
from tasktoolkit import orm
from tests.models import Cluster

NAME = "workers_idle"
_WORKERS = 4
_TASK = "idle_bench"


def _worker(url: str, host: str, out: str, stop: Any, idle_from: float, idle_to: float) -> None:
    """Wait for tasks until told to stop; count statements while idle; record each claim."""
    engine = orm.prepare_engine(create_engine(url, pool_size=1))
    worker = orm.Worker(engine, [_TASK], host=host)
    sent = [0]

    def count(*_: Any) -> None:
        if idle_from <= time.time() < idle_to:
            sent[0] += 1

    event.listen(engine, "before_cursor_execute", count)
    event.listen(engine, "commit", count)
    claims: list[tuple[str, float]] = []
    try:
        while not stop.is_set():
            job = worker.claim(wait=60)
            if job is not None:
                claims.append((job.id, time.time()))
                job.succeed()
    finally:
        Path(out).write_text(json.dumps({"idle": sent[0], "claims": claims}))
        worker.close()
        engine.dispose()


def _spawn(engine: Any, cluster: Cluster) -> tuple[str, float]:
    with Session(engine) as session:
        session.add(cluster)
        (task,) = cluster.spawn_tasks([_TASK])
        session.commit()
        return task.id, time.time()


def run(bench: Bench) -> dict[str, float]:
    engine = fresh_engine(bench)
    url = engine.url.render_as_string(hide_password=False)
    idle_seconds = 3.0 if bench.quick else 10.0
    # Polling backends pace their spawns by their longest pause: fewer samples.
    pushed = bench.backend == "postgresql"
    samples = (30 if bench.quick else 200) if pushed else (10 if bench.quick else 40)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    with Session(engine, expire_on_commit=False) as session:
        cluster = Cluster(name="idle", project_id="p")
        session.add(cluster)
        session.commit()
    with tempfile.TemporaryDirectory() as tmp:
        idle_from = time.time() + 5.0  # start-up and first looks not counted
        idle_to = idle_from + idle_seconds
        files = [Path(tmp) / f"w{n}.json" for n in range(_WORKERS)]
        processes = [
            ctx.Process(target=_worker, args=(url, f"w{n}", str(f), stop, idle_from, idle_to))
            for n, f in enumerate(files)
        ]
        for process in processes:
            process.start()
        time.sleep(max(0.0, idle_to - time.time()) + 0.5)
        _spawn(engine, cluster)  # a first one, not counted: each worker's first wake
        spawned: dict[str, float] = {}
        for _ in range(samples):
            time.sleep(0.1 if pushed else 1.2)  # every worker waits again
            task_id, at = _spawn(engine, cluster)
            spawned[task_id] = at
        time.sleep(1.5)
        stop.set()
        for _ in processes:  # one more each, to wake them to the stop
            _spawn(engine, cluster)
        for process in processes:
            process.join(timeout=30)
        reports = [json.loads(f.read_text()) for f in files if f.exists()]
    orm.drop_all(engine)
    engine.dispose()
    idle = sum(r["idle"] for r in reports) / len(reports) / idle_seconds
    started = {task_id: at for r in reports for task_id, at in r["claims"]}
    latencies = sorted((started[t] - at) * 1000 for t, at in spawned.items() if t in started)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    bench.table(
        f"{_WORKERS} idle worker processes (claim(wait=...)), then one task at a time",
        [
            ("idle seconds counted", idle_seconds),
            ("statements per second per idle worker", idle),
            ("tasks spawned one at a time", len(latencies)),
            ("spawn-to-start p50 ms", p50),
            ("spawn-to-start p99 ms", p99),
            ("tasks not started", samples - len(latencies)),
        ],
        ["what", "value"],
    )
    return {
        "idle_statements_per_s_per_worker": idle,
        "spawn_to_start_p50_ms": p50,
        "spawn_to_start_p99_ms": p99,
    }
