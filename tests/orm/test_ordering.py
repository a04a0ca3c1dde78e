"""Ordering and exclusivity: tasks that run after others, and exclusive task names.

On every database: a chain is claimed in its order, a failed or cancelled
prerequisite fails its chain in the same transaction, a dependent's start
timeout counts from the moment it became ready, bad ``after`` arguments are
refused with typed errors, and two exclusive tasks of one resource never run
at once, whichever claimers race for them.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.errors import (
    CrossResourceDependencyError,
    DependencyCycleError,
    InvalidDependencyError,
    InvalidTaskOptionError,
    UnknownDependencyError,
)
from tasktoolkit.orm import ReapResult, Task, TaskRules, reap, spawn_tasks
from tasktoolkit.orm._ready import waiting
from tasktoolkit.orm._records import attempts_table, tasks_table
from tasktoolkit.orm._registry import waits_of
from tasktoolkit.orm._transitions import (
    DEPENDENCY_FAILED,
    cancel_operation,
    cancel_task,
    fail_task,
    rerun_operation,
    rerun_task,
    start_task,
    succeed_task,
)
from tasktoolkit.orm._workers import claim_task
from tasktoolkit.views import task_view
from tests.clock import database_now, passed
from tests.models import Node
from tests.orm._db import InOperation, counts_of, load, task_count
from tests.threads import at_once

CHAIN = ("wire", "dhcp", "secure")
#: dhcp after wire, secure after dhcp; audit runs whenever.
AFTER = {"dhcp": ["wire"], "secure": ["dhcp"]}


def _chain(session: Session, node: Node, **options: Any) -> dict[str, Task]:
    """Spawn the chain and an independent ``audit`` on ``node`` and commit; tasks by name."""
    tasks = node.spawn_tasks([*CHAIN, "audit"], after=AFTER, **options)
    session.commit()
    return {task.name: task for task in tasks}


def _claim(session: Session, names: tuple[str, ...] = (*CHAIN, "audit")) -> str | None:
    """The name of the task a claim starts (committed), or ``None``."""
    task = claim_task(session, names, host="w1")
    session.commit()
    return None if task is None else task.name


def _state(session: Session, task: Task) -> tuple[str, str | None]:
    found = load(session, task.id)
    return found.state, found.error_code


def test_a_chain_is_claimed_in_its_order(session: Session, node: Node) -> None:
    tasks = _chain(session, node)
    assert (tasks["dhcp"].waiting_on, tasks["secure"].waiting_on) == (1, 1)
    assert tasks["dhcp"].start_deadline is None  # counts from when it becomes ready
    claimed = []
    while (name := _claim(session, CHAIN)) is not None:
        claimed.append(name)
        assert _claim(session, CHAIN) is None, f"a task started beside {name}"
        succeed_task(session, tasks[name].id)
        session.commit()
    assert claimed == list(CHAIN)
    assert _claim(session) == "audit"


def test_a_dependent_starts_only_once_its_prerequisites_succeeded(
    session: Session, node: Node
) -> None:
    tasks = _chain(session, node)
    assert _claim(session, ("dhcp", "secure")) is None
    start_task(session, tasks["wire"].id, host="w1")
    session.commit()
    assert _claim(session, ("dhcp", "secure")) is None  # running is not succeeded
    succeed_task(session, tasks["wire"].id)
    session.commit()
    dhcp = load(session, tasks["dhcp"].id)
    assert dhcp.waiting_on == 0 and dhcp.not_before is not None
    assert _claim(session, ("dhcp", "secure")) == "dhcp"


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(lambda s, t: fail_task(s, t, code="boom", message="broke"), id="failed"),
        pytest.param(lambda s, t: cancel_task(s, t), id="cancelled"),
        pytest.param(
            lambda s, t: (
                start_task(s, t, host="w1"),
                fail_task(s, t, code="boom", message="broke", host="w1", retry=True),
            ),
            id="failed-running-no-retry-left",
        ),
    ],
)
def test_a_failed_prerequisite_fails_its_whole_chain_at_once(
    session: Session,
    engine: Engine,
    node: Node,
    in_operation: InOperation,
    end: Callable[[Session, str], Any],
) -> None:
    with in_operation() as op:
        tasks = _chain(session, node)
    end(session, tasks["wire"].id)
    session.commit()  # the same transaction as the move that ended it
    for name in ("dhcp", "secure"):
        found = load(session, tasks[name].id)
        assert (found.state, found.error_code) == ("failed", DEPENDENCY_FAILED)
        assert found.attempts == 0 and found.finished_at is not None
    assert _state(session, tasks["audit"]) == ("pending", None)
    wire = "cancelled" if load(session, tasks["wire"].id).state == "cancelled" else "failed"
    expected = {"pending": 1, "failed": 2}
    expected[wire] = expected.get(wire, 0) + 1
    assert counts_of(engine, op) == expected
    session.expire(node)
    assert node.task_status == "busy"  # audit still pending


@pytest.mark.parametrize(
    "in_a_request", [pytest.param(True, id="in-its-request"), pytest.param(False, id="no-request")]
)
def test_a_rerun_prerequisite_runs_its_chain_again(
    session: Session, engine: Engine, node: Node, in_operation: InOperation, in_a_request: bool
) -> None:
    with in_operation() as first:
        tasks = _chain(session, node)
    fail_task(session, tasks["wire"].id, code="boom", message="broke")
    session.commit()
    if in_a_request:
        with in_operation() as again:
            rerun_task(session, tasks["wire"].id)
    else:
        again = None
        rerun_task(session, tasks["wire"].id)
    session.commit()
    for name in CHAIN:  # the chain waits on its prerequisites again, in the re-run's operation
        found = load(session, tasks[name].id)
        assert (found.state, found.error_code, found.request_id) == ("pending", None, again)
        assert found.waiting_on == (0 if name == "wire" else 1)
        assert (found.start_deadline is None) == (name != "wire"), name
    assert counts_of(engine, first) == {"pending": 1, "failed": 3}  # it keeps its counts
    if again is not None:
        assert counts_of(engine, again) == {"pending": 3}
    claimed = []
    while (name := _claim(session, CHAIN)) is not None:
        claimed.append(name)
        succeed_task(session, tasks[name].id)
        session.commit()
    assert claimed == list(CHAIN)


def test_a_dependent_with_another_failed_prerequisite_stays_failed(
    session: Session, node: Node
) -> None:
    tasks = {
        t.name: t
        for t in node.spawn_tasks(["wire", "dhcp", "secure"], after={"secure": ["wire", "dhcp"]})
    }
    session.commit()
    for name in ("wire", "dhcp"):
        fail_task(session, tasks[name].id, code="boom", message="broke")
    session.commit()
    rerun_task(session, tasks["wire"].id)
    session.commit()
    assert _state(session, tasks["secure"]) == ("failed", DEPENDENCY_FAILED)
    rerun_task(session, tasks["dhcp"].id)
    session.commit()
    secure = load(session, tasks["secure"].id)
    assert (secure.state, secure.waiting_on) == ("pending", 2)


def test_a_rerun_operation_rearms_each_chain_once(
    session: Session, engine: Engine, node: Node, in_operation: InOperation
) -> None:
    with in_operation() as first:
        tasks = _chain(session, node)
    fail_task(session, tasks["wire"].id, code="boom", message="broke")
    session.commit()
    with in_operation() as again:
        rerun_operation(session, first)
    session.commit()
    assert counts_of(engine, again) == {"pending": 3}


def test_a_chain_in_a_cancelled_operation_is_cancelled_not_failed(
    session: Session, engine: Engine, node: Node, in_operation: InOperation
) -> None:
    with in_operation() as op:
        _chain(session, node)
    cancel_operation(session, op)
    session.commit()
    assert counts_of(engine, op) == {"cancelled": 4}


def test_a_dependents_start_timeout_counts_from_when_it_became_ready(
    session: Session, engine: Engine, node: Node
) -> None:
    rules = TaskRules(start_timeout=timedelta(minutes=5), heartbeat_timeout=timedelta(hours=2))
    tasks = _chain(session, node, rules=rules)
    start_task(session, tasks["wire"].id, host="w1")
    start_task(session, tasks["audit"].id, host="w1")
    session.commit()
    passed(engine, timedelta(minutes=30))
    # Neither its own deadline nor an operator's bound fails a task still waiting.
    assert reap(engine, start_timeout=timedelta(minutes=10)) == ReapResult()
    succeed_task(session, tasks["wire"].id)
    session.commit()
    dhcp = load(session, tasks["dhcp"].id)
    assert dhcp.not_before is not None
    assert dhcp.start_deadline == dhcp.not_before + timedelta(minutes=5)
    assert load(session, tasks["secure"].id).start_deadline is None
    passed(engine, timedelta(minutes=4))
    assert reap(engine) == ReapResult()
    passed(engine, timedelta(minutes=2))
    assert reap(engine).not_started == (tasks["dhcp"].id,)
    assert _state(session, tasks["secure"]) == ("failed", DEPENDENCY_FAILED)


def _spawner(after: object, *, across: bool = False) -> Callable[[Session, Node, Node], Any]:
    def spawn(session: Session, node: Node, other: Node) -> Any:
        second = other if across else node
        return spawn_tasks(session, [(node, "wire"), (second, "dhcp")], after=after)  # type: ignore[arg-type]

    return spawn


@pytest.mark.parametrize(
    ("spawn", "error"),
    [
        pytest.param(_spawner(["wire"]), InvalidDependencyError, id="not-a-mapping"),
        pytest.param(_spawner({"dhcp": "wire"}), InvalidDependencyError, id="a-bare-name"),
        pytest.param(_spawner({"dhcp": ["no such"]}), InvalidDependencyError, id="a-bad-name"),
        pytest.param(_spawner({"dhcp": [7]}), InvalidDependencyError, id="not-a-name"),
        pytest.param(_spawner({"dhcp": ["scan"]}), UnknownDependencyError, id="unknown-name"),
        pytest.param(_spawner({"scan": ["wire"]}), UnknownDependencyError, id="unknown-key"),
        pytest.param(_spawner({"dhcp": ["dhcp"]}), DependencyCycleError, id="itself"),
        pytest.param(
            _spawner({"dhcp": ["wire"], "wire": ["dhcp"]}), DependencyCycleError, id="a-cycle"
        ),
        pytest.param(
            _spawner({"dhcp": ["wire"]}, across=True),
            CrossResourceDependencyError,
            id="another-resource",
        ),
    ],
)
def test_bad_orders_are_refused_at_spawn(
    session: Session,
    engine: Engine,
    make_node: Callable[..., Node],
    spawn: Callable[[Session, Node, Node], Any],
    error: type[Exception],
) -> None:
    node, other = make_node("n1"), make_node("n2")
    with pytest.raises(error) as refused:
        spawn(session, node, other)
    assert type(refused.value) is error
    assert getattr(refused.value, "status", None) == 400
    session.rollback()
    assert task_count(engine) == 0


def test_views_show_after_and_why_a_task_waits(session: Session, node: Node) -> None:
    tasks = _chain(session, node)
    exclusive = node.spawn_tasks(["one_at_a_time", "one_at_a_time"])
    session.commit()
    listed = [*tasks.values(), *exclusive]
    reasons = waiting(session, listed)
    assert reasons == {
        tasks["dhcp"].id: "dependency",
        tasks["secure"].id: "dependency",
        exclusive[1].id: "exclusive",
    }
    waits = waits_of(session, listed)
    view = task_view(tasks["secure"], admin=False, waits=waits)
    assert (view["after"], view["waiting"]) == (["dhcp"], "dependency")
    assert task_view(tasks["wire"], admin=False)["after"] == []
    assert task_view(exclusive[1], admin=False, waits=waits)["waiting"] == "exclusive"


def test_a_waiting_task_makes_its_resource_busy(session: Session, node: Node) -> None:
    tasks = _chain(session, node)
    for name in ("wire", "audit"):
        start_task(session, tasks[name].id, host="w1")
        succeed_task(session, tasks[name].id)
    session.commit()
    session.expire(node)
    assert node.task_status == "busy"  # dhcp now ready, secure waiting on it


# -- exclusive task names --------------------------------------------------------


def test_exclusive_tasks_run_one_after_the_other_in_creation_order(
    session: Session, make_node: Callable[..., Node]
) -> None:
    node, other = make_node("n1"), make_node("n2")
    first = node.spawn_tasks(["one_at_a_time", "one_at_a_time"])
    elsewhere = other.spawn_task("one_at_a_time")
    session.commit()
    assert _claim(session, ("one_at_a_time",)) == "one_at_a_time"
    assert _claim(session, ("one_at_a_time",)) == "one_at_a_time"  # the other node's
    assert _claim(session, ("one_at_a_time",)) is None  # the second of node waits
    assert load(session, first[0].id).state == "running"
    assert load(session, elsewhere.id).state == "running"
    succeed_task(session, first[0].id)
    session.commit()
    assert _claim(session, ("one_at_a_time",)) == "one_at_a_time"
    assert load(session, first[1].id).state == "running"


def test_exclusive_tasks_never_overlap_under_concurrent_claimers(
    session: Session, session_factory: sessionmaker[Session], make_node: Callable[..., Node]
) -> None:
    nodes = [make_node(f"n{i}") for i in range(2)]
    per_node = 6
    spawned = spawn_tasks(
        session, [(node, "one_at_a_time") for node in nodes for _ in range(per_node)]
    )
    session.commit()
    total = len(spawned)
    lock = threading.Lock()
    holding: dict[str, int] = {}
    most: dict[str, int] = {}
    done: list[str] = []

    def claimer(host: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if len(done) == total:
                    return
            with session_factory() as s:
                task = claim_task(s, ["one_at_a_time"], host=host)
                s.commit()
                if task is None:
                    continue
                resource = task.resource_id
                with lock:
                    holding[resource] = holding.get(resource, 0) + 1
                    most[resource] = max(most.get(resource, 0), holding[resource])
                time.sleep(0.01)  # the work: long enough for another claimer to try
                with lock:
                    holding[resource] -= 1
                succeed_task(s, task.id, host=host)
                s.commit()
                with lock:
                    done.append(task.id)
        pytest.fail("the claimers did not finish in time")

    at_once(*(lambda h=f"w{i}": claimer(h) for i in range(4)))
    assert sorted(done) == sorted(t.id for t in spawned)
    assert set(most.values()) == {1}
    # On the database's clock too: each attempt of a node starts after the last ended,
    # in creation order.
    rows = session.execute(
        select(tasks_table.c.resource_id, attempts_table.c.started_at, attempts_table.c.finished_at)
        .join(attempts_table, attempts_table.c.task_id == tasks_table.c.id)
        .order_by(tasks_table.c.resource_id, tasks_table.c.created_at, tasks_table.c.id)
    ).all()
    assert len(rows) == total
    for before, after in itertools.pairwise(rows):
        if before.resource_id == after.resource_id:
            assert after.started_at >= before.finished_at, (before, after)


def test_a_spawns_rules_may_be_given_per_name(session: Session, node: Node) -> None:
    rules = {"*": TaskRules(max_attempts=2), "dhcp": TaskRules(exclusive=True)}
    wire, dhcp = node.spawn_tasks(["wire", "dhcp"], rules=rules)
    session.commit()
    assert (wire.max_attempts, wire.exclusive) == (2, False)
    assert (dhcp.max_attempts, dhcp.exclusive) == (1, True)


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param({"dhcp": "exclusive"}, id="not-rules"),
        pytest.param({"no such": TaskRules()}, id="not-a-name"),
    ],
)
def test_bad_rules_per_name_are_refused(session: Session, node: Node, rules: object) -> None:
    with pytest.raises(InvalidTaskOptionError):
        node.spawn_tasks(["wire"], rules=rules)


def test_spawns_of_exclusive_tasks_on_one_resource_commit_in_creation_order(
    backend: str,
    session: Session,
    session_factory: sessionmaker[Session],
    engine: Engine,
    node: Node,
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: a second spawn waits for the first anyway")
    first = node.spawn_task("one_at_a_time")  # not committed: holds the node
    spawned: list[Task] = []

    def second_spawn() -> None:
        with session_factory() as other:
            mine = other.get(Node, node.id)
            assert mine is not None
            spawned.append(mine.spawn_task("one_at_a_time"))
            other.commit()

    thread = threading.Thread(target=second_spawn)
    thread.start()
    thread.join(timeout=1.0)
    assert thread.is_alive(), "the second spawn did not wait for the first to commit"
    before_commit = database_now(engine)
    session.commit()
    thread.join(timeout=30)
    assert not thread.is_alive()
    [second] = spawned
    assert first.created_at < before_commit < second.created_at
