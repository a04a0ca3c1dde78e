"""Task transitions per second with 4 worker processes, and proof that none was lost.

Runs the stress harness of ``tests/stress`` bigger: 4 worker processes
(``multiprocessing`` 'spawn') claim and finish 5,000 pending tasks (1,000 with
``--quick``) spread over 20 operations; each task makes two transitions
(``pending -> running`` by the claim, ``running -> succeeded`` or ``failed``).
Each worker claims 10 tasks per transaction (``Worker.claim_many``; one
statement on PostgreSQL), then finishes each in a transaction of its own.
A canceller and a purge-and-reap process run alongside, as in production.

Figures:

- ``transitions_per_s_4_workers``: transitions / seconds from the first claim
  to the last finish (process start-up not counted);
- ``transitions_per_s_4_workers_one_per_claim``: the same, a second run whose
  workers claim one task per transaction (``Worker.claim``);
- ``lost_updates``: tasks whose state is not what their mover recorded (bar: 0);
- ``double_moves``: tasks started by more than one worker (bar: 0);
- ``claim_several_queues_ratio_1m_backlog``: one claim over 3 queues (each holding
  100 pending tasks) while a 4th queue holds 1,000,000 older pending tasks (100,000
  with ``--quick``), against the same claim with the 4th queue empty, timed side by
  side on two databases (the one at ``--db-url`` and a sibling); each claim starts a
  task and rolls back (bar: <= 1.5).

Warning: drops and re-creates the toolkit's and the test models' tables at ``--db-url``.
"""

from __future__ import annotations

import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from benchmarks._harness import (
    Bench,
    analyze,
    fresh_engine,
    interleaved,
    seeded_uuid,
    sibling,
    task_identity,
)
from tasktoolkit import orm
from tasktoolkit.orm._records import tasks_table
from tasktoolkit.orm._workers import claim_tasks
from tests.models import Cluster
from tests.stress.harness import Plan, check, double_moves, lost_updates
from tests.stress.harness import run as run_stress

NAME = "workers"

#: The queues the claim serves, and the one it does not (the backlog's).
SERVED, BACKLOG = ("q1", "q2", "q3"), "q4"
#: Pending tasks on each served queue.
_SERVED_PENDING = 100
_BATCH = 10_000


def _one_run(bench: Bench, claim_batch: int) -> tuple[float, int, int, list[str], Any]:
    """One stress run on fresh tables; (rate, lost, double, problems, outcome)."""
    engine = fresh_engine(bench)
    plan = Plan(
        workers=4,
        operations=20,
        tasks_per_operation=50 if bench.quick else 250,
        expired_tasks=200 if bench.quick else 2000,
        cancel_one_in=50,
        chatty=False,
        deadline_s=900,
        claim_batch=claim_batch,
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            outcome = run_stress(engine, plan, Path(tmp))
        problems = check(engine, plan, outcome)
        lost = len(lost_updates(engine, outcome))
        double = len(double_moves(outcome))
    finally:
        orm.drop_all(engine)
        engine.dispose()
    transitions = 2 * len(outcome.moves)
    rate = transitions / outcome.work_seconds if outcome.work_seconds else 0.0
    return rate, lost, double, problems, outcome


def _pending(rng: random.Random, cluster_id: str, queue: str, created: datetime) -> dict[str, Any]:
    return {
        **task_identity(rng, "cluster", cluster_id),
        "request_id": None,
        "name": "build",
        "state": "pending",
        "queue": queue,
        "project_id": "bench",
        "cancel_requested": False,
        "attempts": 0,
        "max_attempts": 1,
        "heartbeat_timeout": 86400,
        "created_at": created,
        "updated_at": created,
    }


def _fill_queues(engine: Engine, backlog: int) -> None:
    """``_SERVED_PENDING`` pending tasks on each served queue, and ``backlog`` older ones on
    the other queue (oldest first: a claim that walked every pending task would pass them
    all before reaching its own)."""
    rng = random.Random(7)
    orm.drop_all(engine)
    orm.create_all(engine)
    cluster_id = seeded_uuid(rng)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(Cluster.__table__), [{"id": cluster_id, "name": "c"}])
    for start in range(0, backlog, _BATCH):
        rows = [
            _pending(rng, cluster_id, BACKLOG, now - timedelta(days=2, seconds=n))
            for n in range(start, min(backlog, start + _BATCH))
        ]
        with engine.begin() as conn:
            conn.execute(insert(tasks_table), rows)
    served = [
        _pending(rng, cluster_id, SERVED[n % len(SERVED)], now - timedelta(seconds=n))
        for n in range(_SERVED_PENDING * len(SERVED))
    ]
    with engine.begin() as conn:
        conn.execute(insert(tasks_table), served)
    analyze(engine)


def _claim_and_roll_back(engine: Engine) -> None:
    with Session(engine) as session:
        started = claim_tasks(session, ["build"], host="bench", queues=SERVED, count=1)
        assert len(started) == 1, "a served queue's task should start"
        session.rollback()


def several_queues(bench: Bench) -> dict[str, float]:
    """A claim over 3 queues beside a 4th queue's backlog, against the same beside none."""
    backlog = 100_000 if bench.quick else 1_000_000
    rounds = 51 if bench.quick else 201
    url = make_url(bench.db_url)
    with sibling(url, "_claims_empty") as empty_url:
        engines = {
            "backlog": orm.prepare_engine(create_engine(url)),
            "empty": orm.prepare_engine(create_engine(empty_url)),
        }
        try:
            _fill_queues(engines["backlog"], backlog)
            _fill_queues(engines["empty"], 0)
            times = interleaved(
                {
                    name: (lambda e=engine: _claim_and_roll_back(e))
                    for name, engine in engines.items()
                },
                rounds=rounds,
                per_round=5,
            )
        finally:
            for engine in engines.values():
                orm.drop_all(engine)
                engine.dispose()
    ratio = times["backlog"] / times["empty"]
    bench.table(
        f"one claim over {len(SERVED)} queues ({_SERVED_PENDING} pending each), "
        "started and rolled back",
        [
            (f"queue {BACKLOG} empty", times["empty"] * 1000, 1.0),
            (f"queue {BACKLOG} holding {backlog:,} older pending", times["backlog"] * 1000, ratio),
        ],
        ["the other queue", "median ms", "x empty"],
    )
    return {"claim_several_queues_ratio_1m_backlog": ratio}


def run(bench: Bench) -> dict[str, float]:
    figures = several_queues(bench)
    rate, lost, double, problems, outcome = _one_run(bench, claim_batch=10)
    single, single_lost, single_double, single_problems, _ = _one_run(bench, claim_batch=1)
    lost, double = lost + single_lost, double + single_double
    problems += single_problems
    bench.table(
        "4 worker processes claiming (10 per transaction) and finishing tasks",
        [
            ("tasks finished by workers", len(outcome.moves)),
            ("cancelled while pending", len(outcome.cancelled_pending)),
            ("expired tasks purged meanwhile", outcome.purged_tasks),
            ("seconds, first claim to last finish", outcome.work_seconds),
            ("transitions per second", rate),
            ("transitions per second, one task per claim (a second run)", single),
            ("lost updates (both runs)", lost),
            ("double moves (both runs)", double),
            ("other problems (both runs)", len(problems)),
        ],
        ["what", "value"],
    )
    for problem in problems[:5]:
        print(f"  problem: {problem}")
    return {
        **figures,
        "transitions_per_s_4_workers": rate,
        "transitions_per_s_4_workers_one_per_claim": single,
        "lost_updates": float(lost),
        "double_moves": float(double),
    }
