"""Compare-and-set under a real race: two sessions, two connections, two threads.

Both threads read the task and only then try to move it: a barrier holds each
one just before its UPDATE until the other has also read. One UPDATE then
waits for the other's row (or, on SQLite, database) lock, and must find the
task moved when it gets it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Update, event, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from tasktoolkit import signals
from tasktoolkit.errors import InvalidTransitionError
from tasktoolkit.orm import Task, cancel_task
from tasktoolkit.orm._operations import end_request
from tasktoolkit.orm._records import tasks_table
from tasktoolkit.orm._transitions import fail_task, start_task, succeed_task
from tests.models import Node
from tests.orm._db import SpawnInOp, counts_of, spawn, task_row

Move = Callable[[Session, str], Any]

RACES = [
    pytest.param(
        "pending",
        lambda s, t: start_task(s, t, host="a"),
        lambda s, t: start_task(s, t, host="b"),
        id="start-vs-start",
    ),
    pytest.param(
        "running",
        lambda s, t: succeed_task(s, t),
        lambda s, t: fail_task(s, t, code="x", message="y"),
        id="succeed-vs-fail",
    ),
]


def _hold_before_update(session: Session, barrier: threading.Barrier, reads: list[str]) -> None:
    """Make ``session``'s first UPDATE of the tasks table wait at ``barrier``."""
    held = False

    def before(state: ORMExecuteState) -> None:
        nonlocal held
        statement = state.statement
        if held or not isinstance(statement, Update) or statement.table is not tasks_table:
            return
        held = True
        reads.append("read")  # this session has read the task by now
        barrier.wait(timeout=20)

    event.listen(session, "do_orm_execute", before)


def _race(session_factory: sessionmaker[Session], task_id: str, moves: list[Move]) -> list[object]:
    barrier = threading.Barrier(len(moves))
    outcomes: list[object] = [None] * len(moves)
    reads: list[str] = []

    def run(index: int, move: Move) -> None:
        with session_factory() as s:
            _hold_before_update(s, barrier, reads)
            try:
                outcomes[index] = move(s, task_id).state
                s.commit()
            except Exception as exc:  # reported to the test below
                s.rollback()
                outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i, m)) for i, m in enumerate(moves)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a racer hung"
    assert len(reads) == len(moves), "not every racer read before the other moved"
    return outcomes


@pytest.mark.parametrize(("start", "first", "second"), RACES)
def test_two_sessions_race_one_wins(
    session: Session,
    session_factory: sessionmaker[Session],
    engine: Engine,
    spawn_in_op: SpawnInOp,
    start: str,
    first: Move,
    second: Move,
) -> None:
    op, (task,) = spawn_in_op("boot")
    if start == "running":
        start_task(session, task.id, host="w")
        session.commit()
    before = task_row(engine, task.id)
    assert before is not None
    moves: list[str] = []

    def heard(sender: Any, *, change: Any, **_: Any) -> None:
        moves.append(change.new_state)

    signals.task_state_changed.connect(heard)
    try:
        outcomes = _race(session_factory, task.id, [first, second])
    finally:
        signals.task_state_changed.disconnect(heard)

    winners = [o for o in outcomes if isinstance(o, str)]
    losers = [o for o in outcomes if isinstance(o, InvalidTransitionError)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    after = task_row(engine, task.id)
    assert after is not None and after["state"] == winners[0]
    assert moves == [winners[0]]  # the loser announced nothing
    if start == "pending":
        assert after["attempts"] == 1  # started once, not twice
        assert counts_of(engine, op) == {"running": 1}
    else:
        assert counts_of(engine, op) == {winners[0]: 1}


def test_many_starters_one_wins(
    session: Session, session_factory: sessionmaker[Session], engine: Engine, node: Node
) -> None:
    (task,) = spawn(session, node, "boot")
    starters: list[Move] = [(lambda s, t, h=f"w{i}": start_task(s, t, host=h)) for i in range(4)]
    outcomes = _race(session_factory, task.id, starters)
    assert sum(isinstance(o, str) for o in outcomes) == 1, outcomes
    assert sum(isinstance(o, InvalidTransitionError) for o in outcomes) == 3, outcomes
    with session_factory() as s:
        read = s.get(Task, task.id)
        assert read is not None and read.attempts == 1 and read.state == "running"


def test_cancel_racing_a_start_is_never_lost(
    session_factory: sessionmaker[Session], engine: Engine, spawn_in_op: SpawnInOp
) -> None:
    """A cancel and a start of the same pending task: either the cancel wins (the
    start is refused) or the start wins and the cancel becomes a stop request."""
    op, (task,) = spawn_in_op("boot")
    outcomes = _race(
        session_factory,
        task.id,
        [lambda s, t: cancel_task(s, t), lambda s, t: start_task(s, t, host="w")],
    )
    cancelled, started = outcomes
    assert isinstance(cancelled, str), outcomes  # a cancel is never refused here
    row = task_row(engine, task.id)
    assert row is not None
    if row["state"] == "cancelled":
        assert isinstance(started, InvalidTransitionError)
        assert row["attempts"] == 0
        assert counts_of(engine, op) == {"cancelled": 1}
    else:
        assert started == "running"
        assert (row["state"], row["cancel_requested"]) == ("running", True)
        assert counts_of(engine, op) == {"running": 1}


def test_start_after_a_lost_and_requeued_run_counts_the_attempt(
    session: Session, other_session: Session, engine: Engine, node: Node
) -> None:
    """Between a starter's read and its compare-and-set, another worker starts the
    task, loses it and the reaper re-queues it (pending again, one attempt used):
    the start must count a second attempt, not overwrite the first."""
    (task,) = spawn(session, node, "boot")
    interleaved = False

    def requeue_behind_its_back(state: ORMExecuteState) -> None:
        nonlocal interleaved
        if interleaved or not isinstance(state.statement, Update):
            return
        interleaved = True
        with engine.begin() as conn:
            conn.execute(
                update(tasks_table)
                .where(tasks_table.c.id == task.id)
                .values(state="pending", attempts=tasks_table.c.attempts + 1)
            )

    event.listen(other_session, "do_orm_execute", requeue_behind_its_back)
    start_task(other_session, task.id, host="late")
    other_session.commit()
    assert interleaved
    row = task_row(engine, task.id)
    assert row is not None and (row["state"], row["attempts"]) == ("running", 2)


def test_last_two_tasks_finishing_at_once_finish_the_operation_once(
    session: Session, session_factory: sessionmaker[Session], engine: Engine, spawn_in_op: SpawnInOp
) -> None:
    op, (a, b) = spawn_in_op("a", "b")
    for task in (a, b):
        start_task(session, task.id, host="w")
    session.commit()
    with engine.begin() as conn:
        end_request(conn, op, 202)
    finished: list[Any] = []

    def heard(sender: Any, *, change: Any, **_: Any) -> None:
        finished.append(change)

    signals.operation_finished.connect(heard)
    try:
        outcomes = _race(
            session_factory,
            "",
            [
                lambda s, _: succeed_task(s, a.id),
                lambda s, _: fail_task(s, b.id, code="x", message="y"),
            ],
        )
    finally:
        signals.operation_finished.disconnect(heard)
    assert outcomes == ["succeeded", "failed"]
    assert [(c.operation_id, c.state) for c in finished] == [(op, "failed")]
    assert counts_of(engine, op) == {"succeeded": 1, "failed": 1}
