"""The task state machine: every (from, to) pair, expiry, cancel, progress."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tasktoolkit.errors import (
    InvalidTransitionError,
    TaskNotFoundError,
    TaskNotHeldError,
    TaskToolkitError,
)
from tasktoolkit.orm import Task, cancel_task
from tasktoolkit.orm._transitions import (
    acknowledge_cancel,
    fail_task,
    report_progress,
    start_task,
    succeed_task,
    transition,
)
from tests.models import Cluster, Node
from tests.orm._db import PATH_FROM_PENDING, STATES, move_through, spawn, task_row

# Written out from docs/design.md's States, not derived from the code under test.
ALLOWED = {
    ("pending", "running"),
    ("pending", "cancelled"),
    ("pending", "failed"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "cancelled"),
}
PAIRS = [
    pytest.param(source, target, (source, target) in ALLOWED, id=f"{source}-to-{target}")
    for source in STATES
    for target in STATES
]


def bring_to(session: Session, resource: Any, state: str, name: str = "boot") -> Task:
    """A committed task on ``resource`` in ``state``, reached by allowed moves."""
    (task,) = spawn(session, resource, name)
    move_through(session, task.id, *PATH_FROM_PENDING[state])
    session.commit()
    assert task.state == state
    return task


def refused(
    session: Session, engine: Engine, task_id: str, move: Callable[[], object]
) -> InvalidTransitionError:
    """``move()`` raises :class:`InvalidTransitionError` and leaves the task's row as it was."""
    before = task_row(engine, task_id)
    assert before is not None
    with pytest.raises(InvalidTransitionError) as info:
        move()
    session.commit()
    assert task_row(engine, task_id) == before
    return info.value


@pytest.mark.parametrize(("source", "target", "allowed"), PAIRS)
def test_transition_table(
    session: Session, engine: Engine, node: Node, source: str, target: str, allowed: bool
) -> None:
    task = bring_to(session, node, source)
    if not allowed:
        error = refused(session, engine, task.id, lambda: transition(session, task.id, target))
        assert (error.current, error.requested) == (source, target)
        assert error.status == 409
        return
    before = task_row(engine, task.id)
    assert before is not None
    moved = transition(session, task.id, target)
    session.commit()
    after = task_row(engine, task.id)
    assert after is not None
    assert moved.state == after["state"] == target
    assert after["updated_at"] > before["updated_at"]
    if target == "running":
        assert after["started_at"] == after["updated_at"]
        assert after["attempts"] == 1
    else:
        assert after["started_at"] == before["started_at"]  # kept, or never started
    if target in ("succeeded", "failed", "cancelled"):
        assert after["finished_at"] == after["updated_at"]
        ttl = timedelta(days=7) if target == "failed" else timedelta(hours=24)
        assert after["expires_at"] == after["finished_at"] + ttl
    else:
        assert after["finished_at"] is None and after["expires_at"] is None


EXPIRY = [
    pytest.param("node", "boot", "succeeded", timedelta(hours=24), id="node-default"),
    pytest.param("node", "boot", "failed", timedelta(days=7), id="node-failed-7-days"),
    pytest.param("node", "boot", "cancelled", timedelta(hours=24), id="node-cancelled"),
    pytest.param("node", "keep_forever", "failed", None, id="node-name-keeps-failed"),
    pytest.param("node", "keep_forever", "succeeded", None, id="node-name-keeps-succeeded"),
    pytest.param("cluster", "boot", "failed", timedelta(hours=24), id="cluster-default-policy"),
]


@pytest.mark.parametrize(("kind", "name", "final", "ttl"), EXPIRY)
def test_expiry_policy(
    session: Session,
    engine: Engine,
    cluster: Cluster,
    node: Node,
    kind: str,
    name: str,
    final: str,
    ttl: timedelta | None,
) -> None:
    task = bring_to(session, node if kind == "node" else cluster, final, name=name)
    row = task_row(engine, task.id)
    assert row is not None and row["finished_at"] is not None
    assert row["expires_at"] == (None if ttl is None else row["finished_at"] + ttl)


def test_start_records_the_worker(session: Session, engine: Engine, node: Node) -> None:
    (task,) = spawn(session, node, "boot")
    start_task(session, task.id, host="worker-7")
    session.commit()
    row = task_row(engine, task.id)
    assert row is not None
    assert (row["host"], row["attempts"], row["heartbeat_at"]) == (
        "worker-7",
        1,
        row["started_at"],
    )


def test_succeed_sets_progress_100(session: Session, engine: Engine, node: Node) -> None:
    task = bring_to(session, node, "running")
    report_progress(session, task.id, 40)
    succeed_task(session, task.id, message="done")
    session.commit()
    row = task_row(engine, task.id)
    assert row is not None and (row["progress"], row["message"]) == (100, "done")


def test_fail_records_the_error(session: Session, engine: Engine, node: Node) -> None:
    task = bring_to(session, node, "running")
    fail_task(session, task.id, code="dhcp_timeout", message="no lease", traceback="Traceback...")
    session.commit()
    session.expire_all()
    read = session.get(Task, task.id)
    assert read is not None
    assert read.error == {"code": "dhcp_timeout", "message": "no lease"}
    assert read.error_traceback == "Traceback..."


def test_move_of_a_task_held_by_another_worker(
    session: Session, engine: Engine, node: Node
) -> None:
    task = bring_to(session, node, "running")
    before = task_row(engine, task.id)
    for move in (
        lambda: succeed_task(session, task.id, host="w2"),
        lambda: fail_task(session, task.id, code="x", message="y", host="w2"),
        lambda: acknowledge_cancel(session, task.id, host="w2"),
        lambda: report_progress(session, task.id, 5, host="w2"),
    ):
        with pytest.raises(TaskNotHeldError):
            move()
    session.commit()
    assert task_row(engine, task.id) == before
    succeed_task(session, task.id, host="w1")
    session.commit()
    assert task.state == "succeeded"


def test_unknown_task(session: Session) -> None:
    for move in (
        lambda: start_task(session, "no-such-task"),
        lambda: cancel_task(session, "no-such-task"),
        lambda: report_progress(session, "no-such-task", 1),
    ):
        with pytest.raises(TaskNotFoundError) as info:
            move()
        assert info.value.status == 404


def test_expected_state_mismatch(session: Session, engine: Engine, node: Node) -> None:
    task = bring_to(session, node, "pending")
    refused(
        session, engine, task.id, lambda: transition(session, task.id, "failed", expected="running")
    )
    assert task.state == "pending"


# -- cancel -----------------------------------------------------------------


def test_cancel_pending_is_at_once(session: Session, engine: Engine, node: Node) -> None:
    task = bring_to(session, node, "pending")
    cancel_task(session, task.id)
    session.commit()
    row = task_row(engine, task.id)
    assert row is not None
    assert row["state"] == "cancelled" and row["finished_at"] is not None


def test_cancel_running_asks_the_worker(session: Session, engine: Engine, node: Node) -> None:
    task = bring_to(session, node, "running")
    returned = cancel_task(session, task.id)
    session.commit()
    row = task_row(engine, task.id)
    assert row is not None
    assert (row["state"], row["cancel_requested"], row["finished_at"]) == ("running", True, None)
    assert returned.cancel_requested is True
    acknowledge_cancel(session, task.id, message="stopped")
    session.commit()
    row = task_row(engine, task.id)
    assert row is not None and (row["state"], row["message"]) == ("cancelled", "stopped")


@pytest.fixture(params=["succeeded", "failed", "cancelled"])
def finished(request: pytest.FixtureRequest, session: Session, node: Node) -> Task:
    """A committed task in each final state in turn."""
    return bring_to(session, node, request.param)


def test_cancel_terminal_is_a_conflict(session: Session, engine: Engine, finished: Task) -> None:
    error = refused(session, engine, finished.id, lambda: cancel_task(session, finished.id))
    assert isinstance(error, TaskToolkitError) and error.status == 409
    assert error.code == "tasktoolkit.invalid_transition"


# -- progress -----------------------------------------------------------------


@pytest.mark.parametrize("state", [pytest.param(s, id=s) for s in ("pending", "running")])
def test_set_progress(session: Session, engine: Engine, node: Node, state: str) -> None:
    task = bring_to(session, node, state)
    before = task_row(engine, task.id)
    assert before is not None
    report_progress(session, task.id, 30, message="copying")
    session.commit()
    report_progress(session, task.id, None, message="still copying")
    session.commit()
    row = task_row(engine, task.id)
    assert row is not None
    assert (row["state"], row["progress"], row["message"]) == (state, 30, "still copying")
    assert row["updated_at"] > before["updated_at"]
    report_progress(session, task.id, 0)
    report_progress(session, task.id, 100)
    session.commit()
    row = task_row(engine, task.id)
    assert row is not None and row["progress"] == 100


def test_set_progress_on_terminal_is_refused(
    session: Session, engine: Engine, finished: Task
) -> None:
    refused(session, engine, finished.id, lambda: report_progress(session, finished.id, 50))


# -- stale reads (REPEATABLE READ on MariaDB) ----------------------------------

STALE = [
    pytest.param(lambda s, t: succeed_task(s, t), "succeeded", id="succeed-after-other-started"),
    pytest.param(
        lambda s, t: report_progress(s, t, 10, host="w9"),
        "running",
        id="progress-held-after-other-started",
    ),
    pytest.param(lambda s, t: cancel_task(s, t), "running", id="cancel-after-other-started"),
]


@pytest.mark.parametrize(("move", "final"), STALE)
def test_transition_sees_changes_committed_after_its_snapshot(
    session: Session,
    other_session: Session,
    engine: Engine,
    node: Node,
    move: Callable[[Session, str], Any],
    final: str,
) -> None:
    """A session that read the task earlier in its transaction (a REPEATABLE READ
    snapshot on MariaDB) must judge a move on the task's current state, not on
    what it read before another worker's committed move.
    """
    task = bring_to(session, node, "pending")
    other_session.begin()
    assert other_session.get(Task, task.id) is not None  # the snapshot is taken here
    start_task(session, task.id, host="w9")
    session.commit()
    move(other_session, task.id)
    other_session.commit()
    row = task_row(engine, task.id)
    assert row is not None and row["state"] == final
