"""The ORM tells the engine's hooks of every committed move, with the attempt's outcome."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tasktoolkit import Settings, Toolkit
from tasktoolkit.errors import TaskFailure
from tasktoolkit.hooks import Hook
from tasktoolkit.signals import OperationChange, TaskChange
from tests.models import Node
from tests.orm._db import InOperation


class Moves(Hook):
    def __init__(self) -> None:
        self.moves: list[TaskChange] = []
        self.operations: list[OperationChange] = []

    def task_moved(self, change: TaskChange) -> None:
        self.moves.append(change)

    def operation_changed(self, change: OperationChange) -> None:
        self.operations.append(change)


@pytest.fixture
def toolkit(engine: Engine) -> Iterator[Toolkit]:
    toolkit = Toolkit(engine, Settings(hooks=[Moves()]))
    yield toolkit
    toolkit.close()


@pytest.fixture
def moves(toolkit: Toolkit) -> Moves:
    (hook,) = toolkit.settings.hooks
    assert isinstance(hook, Moves)
    return hook


def test_moves_are_told_after_commit_with_the_attempts_outcome(
    toolkit: Toolkit, session: Session, node: Node, in_operation: InOperation, moves: Moves
) -> None:
    with in_operation():
        node.spawn_tasks(["fine", "broken"])
    session.flush()
    assert moves.moves == []
    session.commit()
    assert [(m.name, m.old_state, m.new_state) for m in moves.moves] == [
        ("fine", None, "pending"),
        ("broken", None, "pending"),
    ]
    moves.moves.clear()
    worker = toolkit.worker(["fine", "broken"])
    while (job := worker.claim()) is not None:
        with job:
            if job.name == "broken":
                raise TaskFailure("wiring_failed", "no port")
    ended = {m.name: m for m in moves.moves if m.old_state == "running"}
    assert (ended["fine"].outcome, ended["fine"].error_code) == ("succeeded", None)
    assert (ended["broken"].outcome, ended["broken"].error_code) == ("failed", "wiring_failed")
    assert ended["broken"].attempt == 1
    assert ended["fine"].started_at is not None and ended["fine"].moved_at is not None
    started = [m for m in moves.moves if m.new_state == "running"]
    assert [m.outcome for m in started] == [None, None]


def test_nothing_is_told_of_a_rolled_back_move(session: Session, node: Node, moves: Moves) -> None:
    node.spawn_tasks(["a"])
    session.flush()
    session.rollback()
    session.commit()
    assert moves.moves == []
