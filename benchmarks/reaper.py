"""A reaper pass that finds nothing to do costs a few statements, however big the tables.

The tables are filled as a real service's grow: a history of finished tasks
and operations (the bulk), plus the work in progress, bounded by the workers:
pending tasks well within their start deadline, running tasks that heartbeat,
requests still in flight. Nothing is due, so :func:`tasktoolkit.orm.reap`
moves nothing; every query it makes must be served by an index on the active
rows (start deadlines, request deadlines, states), never a scan of the history.

Figures, at 1,000,000 task rows (100,000 with ``--quick``) and at 10,000,
timed side by side (two databases: the one at ``--db-url`` and a sibling,
created and dropped here, on a server; a second file on SQLite):

- ``reap_idle_pass_ms_1m``: the median time of one whole pass;
- ``reap_idle_pass_statements``: the statements one pass sends (the same at any size);
- ``reap_idle_ratio_1m_vs_10k``: the median ratio of the two sizes (flat: near 1).

Warning: drops and re-creates the toolkit's and the test models' tables at ``--db-url``.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, event, insert
from sqlalchemy.engine import Engine, make_url

from benchmarks._harness import Bench, analyze, interleaved, seeded_uuid, sibling, task_identity
from tasktoolkit import orm
from tasktoolkit.orm._records import operations_table, tasks_table
from tests.models import Cluster

NAME = "reaper"

BATCH = 10_000
#: Work in progress, fixed: bounded by the workers and requests, not by history.
PENDING, RUNNING, IN_FLIGHT = 200, 50, 20
_FINISHED = ("succeeded", "succeeded", "succeeded", "failed", "cancelled")


def _task(rng: random.Random, cluster_id: str, state: str, now: datetime) -> dict[str, Any]:
    created = now - timedelta(seconds=rng.randrange(60, 30 * 86400))
    active = state in ("pending", "running")
    if state == "running":
        created = now - timedelta(seconds=30)
    return {
        **task_identity(rng, "cluster", cluster_id),
        "name": "build",
        "state": state,
        "project_id": "bench",
        "cancel_requested": False,
        "attempts": 0 if state == "pending" else 1,
        "max_attempts": 1,
        # Deadlines far enough ahead that a slow fill (minutes at 1M rows) passes none.
        "heartbeat_timeout": 86400,
        "heartbeat_at": now if state == "running" else None,
        "start_deadline": now + timedelta(days=1) if state == "pending" else created,
        "created_at": now if state == "pending" else created,
        "started_at": None if state == "pending" else created,
        "updated_at": created,
        "finished_at": None if active else created + timedelta(seconds=30),
        "expires_at": None if active else created + timedelta(days=31),
    }


def _operation(rng: random.Random, in_flight: bool, now: datetime) -> dict[str, Any]:
    created = now if in_flight else now - timedelta(seconds=rng.randrange(60, 30 * 86400))
    return {
        "id": f"req-{seeded_uuid(rng)}",
        "method": "POST",
        "path": "/clusters",
        "state": "running" if in_flight else "succeeded",
        "http_status": None if in_flight else 202,
        "request_deadline": now + timedelta(days=1) if in_flight else None,
        "created_at": created,
        "updated_at": created,
        "finished_at": None if in_flight else created,
        "expires_at": None if in_flight else created + timedelta(days=31),
    }


def fill(engine: Engine, tasks: int, now: datetime) -> None:
    """``tasks`` task rows (history, then work in progress), a tenth as many operations."""
    rng = random.Random(11)
    orm.drop_all(engine)
    orm.create_all(engine)
    cluster_id = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(insert(Cluster.__table__), [{"id": cluster_id, "name": "c"}])
    history = tasks - PENDING - RUNNING
    for start in range(0, history, BATCH):
        size = min(BATCH, history - start)
        rows = [_task(rng, cluster_id, rng.choice(_FINISHED), now) for _ in range(size)]
        with engine.begin() as conn:
            conn.execute(insert(tasks_table), rows)
    active = ["pending"] * PENDING + ["running"] * RUNNING
    operations = [_operation(rng, False, now) for _ in range(tasks // 10)]
    operations += [_operation(rng, True, now) for _ in range(IN_FLIGHT)]
    with engine.begin() as conn:
        conn.execute(insert(tasks_table), [_task(rng, cluster_id, s, now) for s in active])
        for start in range(0, len(operations), BATCH):
            conn.execute(insert(operations_table), operations[start : start + BATCH])
    analyze(engine)


def _statements_of_one_pass(engine: Engine) -> list[str]:
    """The SQL one :func:`~tasktoolkit.orm.reap` sends (BEGIN/COMMIT are not statements here)."""
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        orm.reap(engine)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return seen


def run(bench: Bench) -> dict[str, float]:
    big = 100_000 if bench.quick else 1_000_000
    rounds = 9 if bench.quick else 21
    url = make_url(bench.db_url)
    now = datetime.now(UTC)
    with sibling(url, "_reaper_small") as small_url:
        engines = {
            "big": orm.prepare_engine(create_engine(url)),
            "small": orm.prepare_engine(create_engine(small_url)),
        }
        try:
            fill(engines["big"], big, now)
            fill(engines["small"], 10_000, now)
            for engine in engines.values():
                assert orm.reap(engine) == orm.ReapResult(), "nothing should be due"
            statements = _statements_of_one_pass(engines["big"])
            count = len(statements)
            times = interleaved(
                {size: (lambda e=engine: orm.reap(e)) for size, engine in engines.items()},
                rounds=rounds,
            )
        finally:
            for engine in engines.values():
                orm.drop_all(engine)
                engine.dispose()
    ratio = times["big"] / times["small"]
    bench.table(
        f"one reaper pass with nothing to do ({PENDING} pending, {RUNNING} running, "
        f"{IN_FLIGHT} requests in flight)",
        [
            ("10,000 task rows", times["small"] * 1000, count, 1.0),
            (f"{big:,} task rows", times["big"] * 1000, count, ratio),
        ],
        ["tasks table", "median ms", "statements", "x 10k"],
    )
    print(
        "statements of one pass:\n  " + "\n  ".join(" ".join(s.split())[:110] for s in statements)
    )
    return {
        "reap_idle_pass_ms_1m": times["big"] * 1000,
        "reap_idle_pass_statements": float(count),
        "reap_idle_ratio_1m_vs_10k": ratio,
    }
