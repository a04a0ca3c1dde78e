"""``tasktoolkit workers`` and ``tasktoolkit health`` (against real worker processes), and
``tasktoolkit stats``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.orm import Worker
from tasktoolkit.orm._records import tasks_table, workers_table
from tests.clock import age
from tests.commands.conftest import assert_one_line_error, run, spawn
from tests.processes import Processes

DEADLINE = 30.0


@pytest.fixture
def processes(tmp_path: Path, session_factory: sessionmaker[Session]) -> Iterator[Processes]:
    started = Processes(tmp_path, "worker")
    yield started
    started.close()


def health(capsys: pytest.CaptureFixture[str], db_url: str, *argv: str) -> tuple[int, str, str]:
    return run(capsys, "health", "--db-url", db_url, *argv)


def until_health(
    capsys: pytest.CaptureFixture[str], db_url: str, status: int, *argv: str
) -> tuple[int, str, str]:
    """``health`` run until it exits ``status`` (or the deadline passes)."""
    end = time.monotonic() + DEADLINE
    while True:
        found = health(capsys, db_url, *argv)
        if found[0] == status or time.monotonic() > end:
            return found
        time.sleep(0.1)


def idle_worker(processes: Processes, engine: Engine) -> subprocess.Popen[str]:
    url = engine.url.render_as_string(hide_password=False)
    return processes.start("tests.orm.worker_process", url, "idle")


def test_health_follows_a_real_worker_from_its_start_to_its_death(
    capsys: pytest.CaptureFixture[str], engine: Engine, db_url: str, processes: Processes
) -> None:
    worker = idle_worker(processes, engine)
    pid = str(worker.pid)
    status, out, err = until_health(capsys, db_url, 0, "--pid", pid)
    assert (status, err) == (0, "")
    assert out.startswith(f"live: {socket.gethostname()}:{pid} (database) beat ")
    worker.kill()
    worker.wait(DEADLINE)
    assert health(capsys, db_url, "--pid", pid)[0] == 0  # its beat is recent still
    age(engine, workers_table, beat_at=timedelta(minutes=2))
    assert_one_line_error(capsys, ["health", "--db-url", db_url, "--pid", pid], 1, "not live: ")


def test_health_says_a_worker_that_stopped_cleanly_left(
    capsys: pytest.CaptureFixture[str], engine: Engine, db_url: str, processes: Processes
) -> None:
    worker = idle_worker(processes, engine)
    worker_id = f"{socket.gethostname()}:{worker.pid}"
    assert until_health(capsys, db_url, 0, "--worker-id", worker_id)[0] == 0
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(DEADLINE) == 0
    assert_one_line_error(
        capsys,
        ["health", "--db-url", db_url, "--worker-id", worker_id],
        1,
        f"no worker {worker_id} has announced itself (or it left)",
    )


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        pytest.param([], 0, id="this-host"),
        pytest.param(["--kind", "database"], 0, id="this-host-database"),
        pytest.param(["--kind", "reaper"], 1, id="no-reaper-here"),
        pytest.param(["--host", "elsewhere"], 1, id="another-host"),
        pytest.param(["--worker-id", "nobody:1"], 1, id="unknown-id"),
    ],
)
def test_health_picks_the_workers_it_names(
    capsys: pytest.CaptureFixture[str],
    engine: Engine,
    db_url: str,
    session_factory: sessionmaker[Session],
    argv: list[str],
    status: int,
) -> None:
    Worker(engine, ["l2_wiring"]).claim()
    found, out, err = health(capsys, db_url, *argv)
    assert found == status
    assert len((out if status == 0 else err).splitlines()) == 1


def test_workers_lists_each_worker(
    capsys: pytest.CaptureFixture[str],
    engine: Engine,
    db_url: str,
    session_factory: sessionmaker[Session],
) -> None:
    Worker(engine, ["l2_wiring", "dhcp"], queues=[None, "node-1"], host="n1:1").claim()
    Worker(engine, ["boot"], host="n2:1").claim()
    age(engine, workers_table, workers_table.c.id == "n2:1", beat_at=timedelta(minutes=5))
    status, out, err = run(capsys, "workers", "--db-url", db_url, "-f", "csv")
    assert (status, err) == (0, "")
    header, *lines = out.splitlines()
    assert header == "id,kind,host,pid,names,queues,beat_at,live"
    assert [line.split(",")[0] for line in lines] == ["n1:1", "n2:1"]
    assert '"[""dhcp"",""l2_wiring""]","[null,""node-1""]"' in lines[0]
    assert (lines[0].endswith(",true"), lines[1].endswith(",false")) == (True, True)
    status, out, _ = run(capsys, "workers", "--db-url", db_url, "-f", "json")
    listed = json.loads(out)
    assert [(w["id"], w["live"]) for w in listed] == [("n1:1", True), ("n2:1", False)]
    status, out, _ = run(capsys, "workers", "--db-url", db_url, "-f", "value", "-c", "id")
    assert out == "n1:1\nn2:1\n"


def test_no_workers_is_a_header_alone(
    capsys: pytest.CaptureFixture[str], db_url: str, session_factory: sessionmaker[Session]
) -> None:
    status, out, _ = run(capsys, "workers", "--db-url", db_url, "-f", "csv")
    assert status == 0 and len(out.splitlines()) == 1


def test_health_of_a_reaper_follows_its_passes(
    capsys: pytest.CaptureFixture[str],
    engine: Engine,
    db_url: str,
    session_factory: sessionmaker[Session],
) -> None:
    assert health(capsys, db_url, "--kind", "reaper")[0] == 1
    assert run(capsys, "reap", "--db-url", db_url, "--every", "10s")[0] == 0
    status, out, _ = health(capsys, db_url, "--kind", "reaper")
    assert status == 0 and "(reaper)" in out and "within 21s" in out
    age(engine, workers_table, beat_at=timedelta(seconds=30))  # it missed two passes
    assert health(capsys, db_url, "--kind", "reaper")[0] == 1


def test_stats_print_each_task_name_and_queue(
    capsys: pytest.CaptureFixture[str],
    engine: Engine,
    db_url: str,
    session_factory: sessionmaker[Session],
) -> None:
    spawn(session_factory, ["boot", "boot", "wire"])
    age(engine, tasks_table, created_at=timedelta(minutes=2))
    status, out, err = run(capsys, "stats", "--db-url", db_url, "-f", "csv")
    assert (status, err) == (0, "")
    header, *lines = out.splitlines()
    assert header.split(",") == [
        "name", "queue", "pending", "running", "oldest_pending_seconds", "failed_last_hour",
        "run_seconds_p50", "run_seconds_p95",
    ]  # fmt: skip
    assert [line.split(",")[:4] for line in lines] == [
        ["boot", "", "2", "0"],
        ["wire", "", "1", "0"],
    ]
    assert float(lines[0].split(",")[4]) >= 120
    status, out, _ = run(capsys, "stats", "--db-url", db_url, "-f", "json")
    listed = json.loads(out)
    assert [(s["name"], s["queue"], s["pending"]) for s in listed] == [
        ("boot", None, 2),
        ("wire", None, 1),
    ]
