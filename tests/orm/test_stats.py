"""Stats per task name and queue, on a seeded set, on the database's clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tasktoolkit.orm import Scope
from tasktoolkit.orm._clock import db_now, later
from tasktoolkit.orm._records import attempts_table, tasks_table
from tasktoolkit.orm._stats import TaskStats, percentile, task_stats
from tasktoolkit.orm._transitions import fail_task, start_task, succeed_task
from tests.clock import age
from tests.models import Cluster

A = Scope(project_id="p1")
EVERYONE = Scope(all_projects=True)


def _seed(session: Session, engine: Engine, cluster: Cluster) -> None:
    """boot: 2 pending (10 and 1 minutes old, one of project p2), 1 running; wire on
    queue n1: failed dhcp_down twice and timeout once in the hour, dhcp_down once 2 h
    ago; run: 4 attempts of 1, 2, 3 and 10 s in the hour, one of 100 s 2 h ago."""
    boot = cluster.spawn_tasks(["boot"] * 3)
    wire = cluster.spawn_tasks(["wire"] * 4, queue="n1")
    run = cluster.spawn_tasks(["run"] * 5)
    session.commit()
    start_task(session, boot[2].id, host="w")
    for task, code in zip(wire, ["dhcp_down", "dhcp_down", "timeout", "dhcp_down"], strict=True):
        fail_task(session, task.id, code=code, message="no")
    for task in run:
        start_task(session, task.id, host="w")
        succeed_task(session, task.id)
    session.commit()
    with engine.begin() as conn:
        conn.execute(update(tasks_table).values(project_id="p1"))
        conn.execute(
            update(tasks_table).where(tasks_table.c.id == boot[1].id).values(project_id="p2")
        )
    age(engine, tasks_table, tasks_table.c.id == boot[0].id, created_at=timedelta(minutes=10))
    age(engine, tasks_table, tasks_table.c.id == boot[1].id, created_at=timedelta(minutes=1))
    age(engine, tasks_table, tasks_table.c.id == wire[3].id, finished_at=timedelta(hours=2))
    for task, seconds, ago in zip(run, [1, 2, 3, 10, 100], [60, 60, 60, 60, 7200], strict=True):
        with engine.begin() as conn:
            conn.execute(
                update(attempts_table)
                .where(attempts_table.c.task_id == task.id)
                .values(
                    finished_at=later(db_now(), -ago), started_at=later(db_now(), -ago - seconds)
                )
            )


@pytest.fixture
def seeded(session: Session, engine: Engine, cluster: Cluster) -> None:
    _seed(session, engine, cluster)


def by_name(found: list[TaskStats]) -> dict[tuple[str, str | None], TaskStats]:
    return {(s.name, s.queue): s for s in found}


def test_stats_count_what_waits_runs_fails_and_how_long_runs_take(
    engine: Engine, seeded: None
) -> None:
    with engine.connect() as conn:
        found = task_stats(conn, scope=EVERYONE)
    assert [(s.name, s.queue) for s in found] == [("boot", None), ("run", None), ("wire", "n1")]
    stats = by_name(found)
    boot = stats["boot", None]
    assert (boot.pending, boot.running, boot.failed_last_hour) == (2, 1, {})
    assert boot.oldest_pending_seconds is not None
    assert 600 <= boot.oldest_pending_seconds < 660
    wire = stats["wire", "n1"]
    assert (wire.pending, wire.running, wire.oldest_pending_seconds) == (0, 0, None)
    assert wire.failed_last_hour == {"dhcp_down": 2, "timeout": 1}
    assert wire.attempts_last_hour == 0 and wire.run_seconds_p50 is None
    run = stats["run", None]
    assert run.attempts_last_hour == 4
    assert run.run_seconds_p50 == pytest.approx(2.0, abs=0.01)
    assert run.run_seconds_p95 == pytest.approx(10.0, abs=0.01)


@pytest.mark.parametrize(
    ("scope", "boot_pending"),
    [
        pytest.param(EVERYONE, 2, id="admin-every-project"),
        pytest.param(A, 1, id="own-project"),
        pytest.param(Scope(project_id="p3"), None, id="other-project"),
        pytest.param(Scope(), None, id="no-project"),
    ],
)
def test_stats_count_only_the_projects_in_scope(
    engine: Engine, seeded: None, scope: Scope, boot_pending: int | None
) -> None:
    with engine.connect() as conn:
        stats = by_name(task_stats(conn, scope=scope))
    if boot_pending is None:
        assert stats == {}
        return
    assert stats["boot", None].pending == boot_pending


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [
        pytest.param([], 0.5, None, id="none"),
        pytest.param([4.0], 0.95, 4.0, id="one"),
        pytest.param([3.0, 1.0, 2.0, 10.0], 0.5, 2.0, id="median-of-four"),
        pytest.param([float(n) for n in range(1, 101)], 0.95, 95.0, id="p95-of-100"),
    ],
)
def test_percentile_is_the_nearest_rank(
    values: list[float], share: float, expected: float | None
) -> None:
    assert percentile(values, share) == expected
