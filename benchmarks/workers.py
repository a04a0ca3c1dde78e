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
- ``double_moves``: tasks started by more than one worker (bar: 0).

Warning: drops and re-creates the toolkit's and the test models' tables at ``--db-url``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks._harness import Bench, fresh_engine
from tasktoolkit import orm
from tests.stress.harness import Plan, check, double_moves, lost_updates
from tests.stress.harness import run as run_stress

NAME = "workers"


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


def run(bench: Bench) -> dict[str, float]:
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
        "transitions_per_s_4_workers": rate,
        "transitions_per_s_4_workers_one_per_claim": single,
        "lost_updates": float(lost),
        "double_moves": float(double),
    }
