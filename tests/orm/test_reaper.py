"""The reapers' watch: an outage takes no task from a healthy worker.

A worker is called lost only when both its last heartbeat and the reapers'
unbroken watch of the database are older than its heartbeat timeout; a pass
that finds the reapers' last look older than twice ``reap_every`` and a second
starts the watch anew. Times are moved on the database's clock.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tasktoolkit import Settings
from tasktoolkit.orm import ReapResult, TaskRules, Worker, reap
from tasktoolkit.orm._clock import db_now, later
from tasktoolkit.orm._records import reaper_watch_table, tasks_table
from tests.clock import age, database_now, watched
from tests.orm.test_processes import spawn, state_of

TIMEOUT = timedelta(seconds=300)
SETTINGS = Settings(reap_every="1m")


@pytest.fixture
def silent(engine: Engine, session: Session) -> str:
    """A running task whose worker has sent no heartbeat for longer than its timeout."""
    [task_id] = spawn(session, ["build"], TaskRules(heartbeat_timeout=TIMEOUT))
    Worker(engine, host="quiet").start(task_id)
    age(engine, tasks_table, heartbeat_at=TIMEOUT + timedelta(seconds=1))
    return task_id


def _last_look(engine: Engine, ago: timedelta) -> None:
    """The reapers last looked ``ago``."""
    with engine.begin() as conn:
        conn.execute(update(reaper_watch_table).values(seen_at=later(db_now(), -ago)))


def _since(engine: Engine) -> timedelta:
    """How long the reapers' watch has lasted."""
    with engine.connect() as conn:
        since = conn.execute(select(reaper_watch_table.c.since)).scalar_one()
    return database_now(engine) - since


def test_a_silent_worker_is_lost_only_once_the_reapers_watched_its_timeout(
    engine: Engine, silent: str
) -> None:
    # The first look of all: the watch begins.
    assert reap(engine, settings=SETTINGS) == ReapResult()
    assert _since(engine) < timedelta(seconds=5)
    assert state_of(engine, silent) == "running"

    watched(engine, TIMEOUT - timedelta(seconds=5))
    assert reap(engine, settings=SETTINGS) == ReapResult()

    watched(engine, TIMEOUT)
    assert reap(engine, settings=SETTINGS).failed == (silent,)


@pytest.mark.parametrize(
    ("gap", "lost"),
    [
        pytest.param(timedelta(seconds=100), True, id="within-twice-every-and-a-second"),
        pytest.param(timedelta(seconds=122), False, id="longer-an-outage"),
    ],
)
def test_a_gap_in_the_watch_gives_every_worker_its_timeout_again(
    engine: Engine, silent: str, gap: timedelta, lost: bool
) -> None:
    watched(engine, timedelta(hours=1))
    _last_look(engine, gap)  # no reaper saw the database since

    result = reap(engine, settings=SETTINGS)

    assert result.failed == ((silent,) if lost else ())
    assert (_since(engine) > timedelta(minutes=59)) is lost


def test_each_reaper_judges_gaps_by_its_own_reap_every(engine: Engine, silent: str) -> None:
    watched(engine, timedelta(hours=1))
    _last_look(engine, timedelta(minutes=5))
    # A reaper run every 10 minutes (from cron) sees no gap in 5.
    assert reap(engine, settings=Settings(reap_every="10m")).failed == (silent,)

