"""Four worker processes, a canceller and a purge at once, on each database.

See :mod:`tests.stress.harness` for what is run and checked; the benchmark
``benchmarks/workers.py`` runs the same, bigger.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

from tests.stress.harness import Plan, check, run


def test_many_processes_move_each_task_once_and_purge_only_the_expired(
    engine: Engine, session_factory: object, tmp_path: Path
) -> None:
    plan = Plan(workers=4, operations=8, tasks_per_operation=125, expired_tasks=300)

    outcome = run(engine, plan, tmp_path)

    assert check(engine, plan, outcome) == []
    assert len(outcome.moves) + len(outcome.cancelled_pending) == 1000
    assert outcome.purged_tasks == 300
