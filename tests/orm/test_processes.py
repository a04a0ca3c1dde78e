"""Real worker processes: killed, asked to stop, and cut off from their database.

The workers run ``tests/orm/worker_process.py`` in processes of their own
(which import no test model); every wait polls the database with a deadline.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from tasktoolkit.orm import TaskRules, reap, spawn_tasks
from tasktoolkit.orm._records import attempts_table, tasks_table
from tests.models import Cluster, Node
from tests.orm._db import count_rows, task_row
from tests.processes import ROOT, Processes
from tests.proxy import TcpProxy

DEADLINE = 60.0


def wait_for(probe: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    """Call ``probe`` until it returns something true; fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not (value := probe()):
        if time.monotonic() > end:
            pytest.fail(f"{what}: not reached in {deadline:.0f} s")
        time.sleep(0.05)
    return value


@pytest.fixture
def url(engine: Engine) -> URL:
    return engine.url


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``workers(url, mode, seconds)``: a worker process; all killed after the test."""
    processes = Processes(tmp_path, "worker")

    def start(url: URL, mode: str, seconds: float = 1.0) -> subprocess.Popen[str]:
        rendered = url.render_as_string(hide_password=False)
        return processes.start("tests.orm.worker_process", rendered, mode, str(seconds))

    yield start
    processes.close()


def spawn(session: Session, names: list[str], rules: TaskRules) -> list[str]:
    cluster = Cluster(name="c", project_id="p")
    session.add(cluster)
    session.flush()
    ids = [t.id for t in cluster.spawn_tasks(names, rules=rules)]
    session.commit()
    return ids


def state_of(engine: Engine, task_id: str) -> str:
    row = task_row(engine, task_id)
    assert row is not None
    return str(row["state"])


def attempts(engine: Engine, task_id: str) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(attempts_table.c.number, attempts_table.c.outcome)
            .where(attempts_table.c.task_id == task_id)
            .order_by(attempts_table.c.number)
        ).all()
    return [(row.number, row.outcome) for row in rows]


def test_a_killed_workers_task_is_requeued_within_its_heartbeat_timeout_and_a_pass(
    engine: Engine, session: Session, url: URL, workers: Callable[..., subprocess.Popen[str]]
) -> None:
    timeout = 2
    rules = TaskRules(max_attempts=2, heartbeat_timeout=timedelta(seconds=timeout))
    [task_id] = spawn(session, ["hold"], rules)
    process = workers(url, "hold")
    wait_for(lambda: state_of(engine, task_id) == "running", "the worker claimed its task")
    # Alive and heartbeating: the reaper leaves it alone.
    time_to_judge = time.monotonic() + timeout + 1
    while time.monotonic() < time_to_judge:
        assert reap(engine).total == 0
        time.sleep(0.2)

    process.send_signal(signal.SIGKILL)
    process.wait(timeout=DEADLINE)
    killed = time.monotonic()
    wait_for(lambda: reap(engine).requeued == (task_id,), "the reaper re-queued the task")

    assert time.monotonic() - killed < timeout + 1.5  # its timeout, a heartbeat, a pass
    assert state_of(engine, task_id) == "pending"
    assert attempts(engine, task_id) == [(1, "failed")]


def test_a_sigtermed_worker_hands_its_task_back_within_its_grace_period(
    engine: Engine, session: Session, url: URL, workers: Callable[..., subprocess.Popen[str]]
) -> None:
    grace = 1.0
    [task_id] = spawn(session, ["hold"], TaskRules(max_attempts=1))
    process = workers(url, "graceful", grace)
    wait_for(lambda: state_of(engine, task_id) == "running", "the worker claimed its task")

    process.send_signal(signal.SIGTERM)
    asked = time.monotonic()
    wait_for(lambda: state_of(engine, task_id) == "pending", "the task was handed back")

    assert grace <= time.monotonic() - asked < grace + 2
    assert process.wait(timeout=DEADLINE) == 0
    row = task_row(engine, task_id)
    assert row is not None and (row["host"], row["attempts"], row["max_attempts"]) == (None, 1, 2)
    assert attempts(engine, task_id) == [(1, "handed_back")]
    assert reap(engine).total == 0  # nothing left for the reaper


def test_a_database_away_for_10_s_loses_no_outcome(
    backend: str,
    engine: Engine,
    session: Session,
    url: URL,
    workers: Callable[..., subprocess.Popen[str]],
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no server to stop: an embedded database cannot go away")
    assert url.host is not None and url.port is not None
    proxy = TcpProxy(url.host, url.port)
    try:
        rules = TaskRules(heartbeat_timeout=timedelta(seconds=60))
        ids = spawn(session, ["work"] * 4, rules)
        through_proxy = url.set(host="127.0.0.1", port=proxy.port)
        processes = [workers(through_proxy, "work", 4.0) for _ in range(2)]
        running = [lambda: sum(state_of(engine, i) == "running" for i in ids) == 2]
        wait_for(running[0], "two jobs running")

        proxy.cut()
        time.sleep(10)  # the outage itself (the scenario, not a wait for something)
        proxy.restore()

        for process in processes:
            assert process.wait(timeout=DEADLINE) == 0
    finally:
        proxy.close()
    assert [state_of(engine, i) for i in ids] == ["succeeded"] * 4
    for task_id in ids:
        assert attempts(engine, task_id) == [(1, "succeeded")]


def test_the_worker_process_imports_no_test_model() -> None:
    code = (
        "import sys, tests.orm.worker_process; "
        "assert 'tests.models' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=dict(os.environ))


def test_chains_and_exclusive_tasks_keep_their_order_under_four_processes(
    engine: Engine, url: URL, session: Session, workers: Callable[..., subprocess.Popen[str]]
) -> None:
    cluster = Cluster(name="c", project_id="p")
    session.add(cluster)
    session.flush()
    nodes = [Node(cluster_id=cluster.id, name=f"n{n}") for n in range(8)]
    session.add_all(nodes)
    session.flush()
    names = ("wire", "dhcp", "secure", *("one_at_a_time",) * 3)
    items = [(node, name) for node in nodes for name in names]
    spawned = spawn_tasks(session, items, after={"dhcp": ["wire"], "secure": ["dhcp"]})
    session.commit()
    processes = [workers(url, "order", 0.02) for _ in range(4)]
    wait_for(
        lambda: count_rows(engine, tasks_table, tasks_table.c.state == "succeeded") == len(items),
        "every task succeeded",
    )
    for process in processes:
        process.wait(timeout=DEADLINE)
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                tasks_table.c.resource_id,
                tasks_table.c.name,
                tasks_table.c.created_at,
                tasks_table.c.id,
                attempts_table.c.host,
                attempts_table.c.started_at,
                attempts_table.c.finished_at,
            ).join(attempts_table, attempts_table.c.task_id == tasks_table.c.id)
        ).all()
    assert len(rows) == len(spawned)  # one attempt each
    assert len({row.host for row in rows}) > 1  # several processes took part
    by_node: dict[str, dict[str, list[Any]]] = {}
    for row in rows:
        by_node.setdefault(row.resource_id, {}).setdefault(row.name, []).append(row)
    for tasks in by_node.values():
        # No dependent started before its prerequisite succeeded (the database's times).
        assert tasks["dhcp"][0].started_at >= tasks["wire"][0].finished_at
        assert tasks["secure"][0].started_at >= tasks["dhcp"][0].finished_at
        # The exclusive ones ran one after the other, in creation order.
        exclusive = sorted(tasks["one_at_a_time"], key=lambda r: (r.created_at, r.id))
        for before, after in itertools.pairwise(exclusive):
            assert after.started_at >= before.finished_at, (before, after)
