"""``tasktoolkit reap``: a table of what it moves and the line it prints, and its bridge."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import commands
from tasktoolkit.orm import TaskRules, Worker, cancel_task
from tasktoolkit.orm._records import operations_table, tasks_table
from tests.clock import age, watched
from tests.commands.conftest import assert_one_line_error, run, spawn
from tests.models import Cluster

Left = dict[str, str]
"""What a reap case left in the database: ``{"operation": id}``, and ``"task"`` when it has one."""


def lost_worker(engine: Engine, session_factory: sessionmaker[Session], **spawned: Any) -> Left:
    """A running task whose worker stopped heartbeating 301 s ago (its timeout: 300 s)."""
    rid, [task_id] = spawn(session_factory, ["a"], **spawned)
    Worker(engine, host="gone").start(task_id)
    age(engine, tasks_table, heartbeat_at=timedelta(seconds=301))
    watched(engine, timedelta(seconds=301))  # the reapers watched all along
    return {"operation": rid, "task": task_id}


def cancel_asked_of_a_lost_worker(engine: Engine, session_factory: sessionmaker[Session]) -> Left:
    left = lost_worker(engine, session_factory)
    with session_factory() as s:
        cancel_task(s, left["task"])
        s.commit()
    return left


def pending(engine: Engine, session_factory: sessionmaker[Session], **ago: timedelta) -> Left:
    """A task pending since its spawn, with these times of it moved ``ago``."""
    rid, [task_id] = spawn(session_factory, ["a"])
    age(engine, tasks_table, **ago)
    return {"operation": rid, "task": task_id}


def unended(
    engine: Engine, session_factory: sessionmaker[Session], names: list[str], **ago: timedelta
) -> Left:
    """An operation whose request never recorded its end (tasks of ``names``), with these
    times of it moved ``ago``."""
    rid, tasks = spawn(session_factory, names, status=None)
    age(engine, operations_table, **ago)
    return {"operation": rid, **({"task": tasks[0]} if tasks else {})}


def vanished(engine: Engine, session_factory: sessionmaker[Session]) -> Left:
    """An operation whose pending task went with its resource, deleted in plain SQL."""
    rid, _ = spawn(session_factory, ["a"])
    with engine.begin() as conn:
        conn.execute(delete(Cluster.__table__))
    return {"operation": rid}


def reaped(
    tasks: str = "0 tasks",
    failed: int = 0,
    requeued: int = 0,
    cancelled: int = 0,
    not_started: int = 0,
    requests: str = "0 lost requests",
    settled: str = "",
) -> str:
    """The line ``reap`` prints."""
    return (
        f"reaped {tasks}: {failed} failed (worker_lost), {requeued} re-queued, "
        f"{cancelled} cancelled, {not_started} failed (not_started); ended {requests}"
        + (f"; settled {settled}" if settled else "")
        + "\n"
    )


TWO_MINUTES = timedelta(minutes=2)
SECOND = timedelta(seconds=1)
Seed = Callable[[Engine, sessionmaker[Session]], Left]


@pytest.mark.parametrize(
    ("seed", "options", "out", "states"),
    [
        pytest.param(
            lost_worker,
            [],
            reaped("1 task", failed=1),
            {"task": ("failed", "worker_lost"), "operation": ("failed", "worker_lost")},
            id="worker_lost",
        ),
        pytest.param(
            partial(lost_worker, rules=TaskRules(max_attempts=2)),
            [],
            reaped("1 task", requeued=1),
            {"task": ("pending", None), "operation": ("running", None)},
            id="worker_lost-requeued",
        ),
        pytest.param(
            cancel_asked_of_a_lost_worker,
            [],
            reaped("1 task", cancelled=1),
            {"task": ("cancelled", None), "operation": ("cancelled", None)},
            id="worker_lost-cancel-asked",
        ),
        pytest.param(
            partial(pending, start_deadline=SECOND),
            [],
            reaped("1 task", not_started=1),
            {"task": ("failed", "not_started"), "operation": ("failed", "not_started")},
            id="not_started",
        ),
        pytest.param(
            partial(pending, created_at=TWO_MINUTES),
            [],
            reaped(),
            {"task": ("pending", None), "operation": ("running", None)},
            id="pending-within-its-start-timeout",
        ),
        pytest.param(
            partial(pending, created_at=TWO_MINUTES),
            ["--start-timeout", "1m"],
            reaped("1 task", not_started=1),
            {"task": ("failed", "not_started"), "operation": ("failed", "not_started")},
            id="not_started-by-start-timeout",
        ),
        pytest.param(
            partial(pending, created_at=TWO_MINUTES),
            ["--start-timeout", "5m"],
            reaped(),
            {"task": ("pending", None), "operation": ("running", None)},
            id="pending-within-start-timeout-option",
        ),
        pytest.param(
            partial(unended, names=[], request_deadline=SECOND),
            [],
            reaped(requests="1 lost request"),
            {"operation": ("failed", "request_lost")},
            id="request_lost",
        ),
        pytest.param(
            partial(unended, names=["a"], request_deadline=SECOND),
            [],
            reaped(requests="1 lost request"),
            {"task": ("pending", None), "operation": ("running", None)},
            id="request_lost-follows-its-pending-task",
        ),
        pytest.param(
            partial(unended, names=[], created_at=TWO_MINUTES),
            [],
            reaped(),
            {"operation": ("running", None)},
            id="request-within-its-timeout",
        ),
        pytest.param(
            partial(unended, names=[], created_at=TWO_MINUTES),
            ["--request-timeout", "1m"],
            reaped(requests="1 lost request"),
            {"operation": ("failed", "request_lost")},
            id="request_lost-by-request-timeout",
        ),
        pytest.param(
            partial(unended, names=[], created_at=TWO_MINUTES),
            ["--request-timeout", "5m"],
            reaped(),
            {"operation": ("running", None)},
            id="request-within-request-timeout-option",
        ),
        pytest.param(
            vanished,
            [],
            reaped(settled="1 operation"),
            {"operation": ("cancelled", None)},
            id="settled",
        ),
    ],
)
def test_reap_moves_what_is_overdue_and_says_what_it_did(
    capsys: pytest.CaptureFixture[str],
    db_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
    seed: Seed,
    options: list[str],
    out: str,
    states: dict[str, tuple[str, str | None]],
) -> None:
    left = seed(engine, session_factory)

    argv = ["reap", "--db-url", db_url, "--models", "tests.models", *options]
    assert run(capsys, *argv) == (0, out, "")

    assert set(left) == set(states)
    assert states == {
        kind: tuple(row_of(engine, kind, record_id)[c] for c in ("state", "error_code"))
        for kind, record_id in left.items()
    }


def row_of(engine: Engine, kind: str, record_id: str) -> Any:
    table = {"task": tasks_table, "operation": operations_table}[kind]
    with engine.connect() as conn:
        return conn.execute(select(table).where(table.c.id == record_id)).one()._mapping


class Sweeper:
    """A queue bridge as ``reap --bridge`` sees one: something to ``sweep()``."""

    def __init__(self) -> None:
        self.sweeps = 0

    def sweep(self) -> int:
        self.sweeps += 1
        return 2


BRIDGE = Sweeper()
NOT_A_BRIDGE = object()


def test_reap_sweeps_the_bridge_it_is_given_after_its_pass(
    capsys: pytest.CaptureFixture[str], db_url: str
) -> None:
    sweeps = BRIDGE.sweeps
    status, out, err = run(capsys, "reap", "--db-url", db_url, "--bridge", f"{__name__}:BRIDGE")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        reaped().rstrip("\n"),
        "swept: published 2 tasks the queue did not have",
    ]
    assert BRIDGE.sweeps == sweeps + 1


@pytest.mark.parametrize(
    ("bridge", "says"),
    [
        pytest.param(
            f"{__name__}:NOT_A_BRIDGE", "is not a bridge (it has no sweep())", id="no-sweep"
        ),
        pytest.param(f"{__name__}:NOWHERE", "--bridge: cannot import", id="no-such-name"),
        pytest.param(
            "tests.commands.test_reap", "expected 'package.module:attribute'", id="no-colon"
        ),
    ],
)
def test_reap_refuses_what_is_not_a_bridge(
    capsys: pytest.CaptureFixture[str], bridge: str, says: str
) -> None:
    assert_one_line_error(
        capsys, ["reap", "--db-url", "sqlite://", "--bridge", bridge], commands.EXIT_ERROR, says
    )
