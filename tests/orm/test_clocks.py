"""One clock: workers, reapers and API hosts whose clocks are off change no deadline.

The hosts of a deployment never agree exactly on the time. Each process here
runs with its clock faked by libfaketime (Debian's ``faketime``: 10 minutes
or 2 hours off, both ways; its monotonic clock is left alone), against the
test's database, while the test itself and the database keep the real time.
A worker process (``tests/orm/worker_process.py``), a reaper process (the
``tasktoolkit reap`` command), an API process (``tests/middleware/request_process.py``)
and ``tasktoolkit purge`` each write and compare every time on the database's
clock, so none of them sees anything the others would not.

PostgreSQL and MariaDB only: SQLite runs inside each process, and its clock
is that process's own (faked too), which is right for an embedded database
whose processes share one machine, and one clock.
"""

from __future__ import annotations

import glob
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tasktoolkit import Settings
from tasktoolkit.orm import ReapResult, TaskRules, reap
from tasktoolkit.orm._records import tasks_table
from tests.clock import age, database_now
from tests.databases import in_ci
from tests.orm._db import operation_row, task_row
from tests.orm.test_processes import attempts, spawn, state_of, wait_for
from tests.processes import ROOT, Processes

#: A short heartbeat timeout, so that a test watches it pass.
TIMEOUT = 3
RULES = TaskRules(max_attempts=2, heartbeat_timeout=timedelta(seconds=TIMEOUT))
#: How often the test's own reaper (on the real clock) passes.
REAPER = Settings(reap_every="200ms")

OFF = [
    pytest.param("-10m", id="10-min-behind"),
    pytest.param("+10m", id="10-min-ahead"),
    pytest.param("-2h", id="2-h-behind"),
    pytest.param("+2h", id="2-h-ahead"),
]

Faked = Callable[..., subprocess.Popen[str]]


def _libfaketime() -> str | None:
    """libfaketime's library, as Debian's ``faketime`` package installs it."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    return found[0] if found else None


@pytest.fixture
def faked(backend: str, tmp_path: Path) -> Iterator[Faked]:
    """``faked(offset, module, *args)``: ``python -m module *args`` in a process whose
    clock is ``offset`` off (``-10m``, ``+2h``, ``+2d``; see ``tests/faked_clock.py``);
    all killed after the test."""
    if backend == "sqlite":
        pytest.skip("SQLite's clock is each process's own: faking one fakes its database too")
    library = _libfaketime()
    if library is None:
        message = "libfaketime is not installed (apt-get install faketime)"
        if in_ci():
            pytest.fail(f"{message}; CI=true: the clock tests must run")
        pytest.skip(message)
    processes = Processes(tmp_path, "faked")
    # The library preloaded into python itself (the faketime command would run it as a
    # child, which a SIGKILL to the command leaves running).
    faking = {"LD_PRELOAD": library, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def start(offset: str, *args: str) -> subprocess.Popen[str]:
        env = {**faking, "FAKETIME": offset}
        return processes.start("tests.faked_clock", *args, env=env, piped=True)

    yield start
    processes.close()


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _output(process: subprocess.Popen[str]) -> str:
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    return out


def _reaper(faked: Faked, offset: str, engine: Engine) -> str:
    """One pass of ``tasktoolkit reap`` on a host whose clock is ``offset`` off; its line.

    Run every few seconds at most: each is a process starting up on a busy host.
    """
    command = ["tasktoolkit", "reap", "--db-url", _url(engine), "--every", "5s"]
    return _output(faked(offset, *command))


def _watch_healthy(task_id: str, engine: Engine, reaper: Callable[[], object]) -> None:
    """Reapers pass for longer than the heartbeat timeout: the healthy worker keeps its task."""
    until = time.monotonic() + TIMEOUT + 1
    while time.monotonic() < until:
        reaper()
        assert state_of(engine, task_id) == "running"
        time.sleep(0.1)
    assert attempts(engine, task_id) == []


@pytest.mark.parametrize("offset", OFF)
def test_a_worker_whose_clock_is_off_keeps_its_task_and_is_missed_when_killed(
    engine: Engine, session: Session, faked: Faked, offset: str
) -> None:
    [task_id] = spawn(session, ["hold"], RULES)
    worker = faked(offset, "tests.orm.worker_process", _url(engine), "hold")
    wait_for(lambda: state_of(engine, task_id) == "running", "the worker claimed its task")
    row = task_row(engine, task_id)
    assert row is not None and abs(row["heartbeat_at"] - database_now(engine)) < timedelta(
        seconds=5
    ), "the worker's heartbeat is the database's time, not its own"

    _watch_healthy(task_id, engine, lambda: reap(engine, settings=REAPER))

    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=60)
    killed = time.monotonic()
    wait_for(lambda: reap(engine, settings=REAPER).requeued == (task_id,), "the reaper noticed")
    assert time.monotonic() - killed < TIMEOUT + 1.5  # its timeout, a heartbeat, a pass
    assert attempts(engine, task_id) == [(1, "failed")]


@pytest.mark.parametrize("offset", OFF)
def test_a_reaper_whose_clock_is_off_takes_nothing_healthy_and_notices_the_dead(
    engine: Engine, session: Session, faked: Faked, offset: str
) -> None:
    [task_id] = spawn(session, ["hold"], RULES)
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.orm.worker_process", _url(engine), "hold"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: state_of(engine, task_id) == "running", "the worker claimed its task")
        _watch_healthy(task_id, engine, lambda: _reaper(faked, offset, engine))
    finally:
        worker.kill()
        worker.wait()
    killed = time.monotonic()
    wait_for(
        lambda: "1 re-queued" in _reaper(faked, offset, engine), "the faked reaper noticed"
    )
    # Its timeout, and the passes of processes that start up (a second or more each).
    assert time.monotonic() - killed < TIMEOUT + 8
    assert (state_of(engine, task_id), attempts(engine, task_id)) == ("pending", [(1, "failed")])


@pytest.mark.parametrize(
    "offset", [pytest.param("-2h", id="2-h-behind"), pytest.param("+2h", id="2-h-ahead")]
)
def test_an_api_host_whose_clock_is_off_writes_the_databases_time(
    engine: Engine, faked: Faked, offset: str
) -> None:
    host = ("tests.middleware.request_process", _url(engine), "answered")
    request_id = _output(faked(offset, *host)).strip()
    now = database_now(engine)
    op = operation_row(engine, request_id)
    with engine.connect() as conn:
        task = conn.execute(
            select(tasks_table).where(tasks_table.c.request_id == request_id)
        ).one()
    minute = timedelta(minutes=1)
    assert abs(op["created_at"] - now) < minute and abs(op["updated_at"] - now) < minute
    assert abs(task.created_at - now) < minute
    # Its start timeout (an hour) counts from its spawn on the database's clock.
    assert task.start_deadline == task.created_at + timedelta(hours=1)
    assert op["http_status"] == 202 and op["request_deadline"] is None  # its end recorded

    assert reap(engine) == ReapResult()  # nothing is overdue
    assert state_of(engine, task.id) == "pending"


@pytest.mark.parametrize(
    "offset", [pytest.param("+10m", id="10-min-ahead"), pytest.param("+2h", id="2-h-ahead")]
)
def test_a_worker_whose_clock_runs_fast_waits_for_a_retrys_backoff(
    engine: Engine, session: Session, faked: Faked, offset: str
) -> None:
    [task_id] = spawn(session, ["hold"], RULES)
    waiting = tasks_table.c.id == task_id
    age(engine, tasks_table, waiting, not_before=-timedelta(minutes=5))  # 5 minutes to go

    claim = ("tests.orm.worker_process", _url(engine), "claim")
    assert _output(faked(offset, *claim)).strip() == "none"
    assert state_of(engine, task_id) == "pending"

    age(engine, tasks_table, waiting, not_before=timedelta(seconds=1))  # its backoff is over
    assert _output(faked(offset, *claim)).strip() == task_id
    assert state_of(engine, task_id) == "running"


@pytest.mark.parametrize(
    "offset", [pytest.param("+2d", id="2-days-fast"), pytest.param("-2d", id="2-days-slow")]
)
def test_purge_from_a_host_whose_clock_is_days_off_deletes_only_the_expired(
    engine: Engine, session: Session, faked: Faked, offset: str
) -> None:
    expired, unexpired = spawn(session, ["a", "b"], RULES)
    with engine.begin() as conn:  # both finished (they belong to no operation)
        conn.execute(tasks_table.update().values(state="succeeded"))
    age(engine, tasks_table, tasks_table.c.id == expired, expires_at=timedelta(hours=1))
    age(engine, tasks_table, tasks_table.c.id == unexpired, expires_at=-timedelta(days=1))

    purge = ("tasktoolkit", "purge", "--db-url", _url(engine))
    dry = _output(faked(offset, *purge, "--dry-run"))
    assert dry.startswith("would purge 1 task and 0 operations"), dry
    assert _output(faked(offset, *purge)).startswith("purged 1 task and 0 operations")
    assert task_row(engine, expired) is None and task_row(engine, unexpired) is not None
