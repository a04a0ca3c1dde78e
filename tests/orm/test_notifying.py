"""What a sender of notifications reads and marks, on the database's clock.

No broker here (``tests/oslo/test_notifications.py`` runs the real one): the
sweep's window over operations whose finish times are set relative to the
database's own ``now``, and the compare-and-set of the mark, on SQLite,
PostgreSQL and MariaDB.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.orm._clock import read_now as database_now
from tasktoolkit.orm._notifying import mark_notified, operations_to_notify
from tasktoolkit.orm._records import operations_table

SETTLED = timedelta(minutes=1)
WITHIN = timedelta(days=1)
#: How long ago each operation finished (``None``: still running), and whether the
#: sweep finds it.
CASES = [
    pytest.param(None, False, id="running"),
    pytest.param(timedelta(seconds=5), False, id="finished-just-now"),
    pytest.param(timedelta(minutes=2), True, id="finished-minutes-ago"),
    pytest.param(timedelta(hours=23), True, id="finished-within-the-day"),
    pytest.param(timedelta(days=2), False, id="finished-before-the-window"),
]


@pytest.fixture
def finished_ago(engine: Engine, open_op: Callable[..., str]) -> Callable[..., str]:
    """``finished_ago(delta)``: an operation that finished ``delta`` before the database's
    now (``None``: running)."""

    def make(ago: timedelta | None) -> str:
        operation_id = open_op()
        if ago is not None:
            with engine.begin() as connection:
                now = database_now(connection)
                connection.execute(
                    update(operations_table)
                    .where(operations_table.c.id == operation_id)
                    .values(state="succeeded", finished_at=now - ago)
                )
        return operation_id

    return make


def _found(session: Session, ids: list[str] | None, limit: int = 100) -> list[str]:
    with session.begin():
        found = operations_to_notify(
            session, ids=ids, settled=SETTLED, within=WITHIN, limit=limit
        )
    return [operation.id for operation in found]


@pytest.mark.parametrize(("ago", "swept"), CASES)
def test_the_sweep_finds_what_finished_in_its_window_and_was_not_marked(
    finished_ago: Callable[..., str],
    session_factory: sessionmaker[Session],
    engine: Engine,
    ago: timedelta | None,
    swept: bool,
) -> None:
    operation_id = finished_ago(ago)
    with session_factory() as session:
        assert (operation_id in _found(session, None, limit=10000)) is swept
        # Told of it by id: any finished operation not marked, whenever it finished.
        assert _found(session, [operation_id]) == ([] if ago is None else [operation_id])
    with engine.begin() as connection:
        mark_notified(connection, [operation_id])
    with session_factory() as session:
        assert operation_id not in _found(session, None, limit=10000)
        assert _found(session, [operation_id]) == []


def test_a_mark_is_made_once(finished_ago: Callable[..., str], engine: Engine) -> None:
    first, second = finished_ago(SETTLED * 2), finished_ago(SETTLED * 2)
    with engine.begin() as connection:
        assert mark_notified(connection, [first]) == 1
    with engine.begin() as connection:
        assert mark_notified(connection, [first, second]) == 1
        assert mark_notified(connection, []) == 0


def test_the_sweep_takes_the_oldest_first_up_to_its_limit(
    finished_ago: Callable[..., str], session_factory: sessionmaker[Session], engine: Engine
) -> None:
    with engine.begin() as connection:  # what earlier tests left is not this test's
        connection.execute(update(operations_table).values(notified_at=database_now(connection)))
    newer = finished_ago(timedelta(minutes=2))
    older = finished_ago(timedelta(minutes=3))
    with session_factory() as session:
        assert _found(session, None, limit=1) == [older]
        assert _found(session, None, limit=2) == [older, newer]
