"""A process killed between the app's commit and the end of its request.

On SQLite, PostgreSQL and MariaDB: the operation committed with the request's
tasks stays ``running`` with no status, and the reaper ends the request once
its timeout has passed; the tasks then decide how the operation ends.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.orm import Worker, reap
from tests.clock import passed
from tests.orm._db import operation_row

ROOT = Path(__file__).resolve().parents[2]


def test_a_request_killed_after_the_apps_commit_is_ended_by_the_reaper(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.middleware.request_process",
            engine.url.render_as_string(hide_password=False),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            request_id = process.stdout.readline().strip()  # the app has committed
        finally:
            process.kill()
    assert request_id.startswith("req-"), "the request process died before its commit"

    row = operation_row(engine, request_id)
    assert (row["state"], row["http_status"], row["tasks_pending"]) == ("running", None, 2)
    assert reap(engine).total == 0 and operation_row(engine, request_id)["state"] == "running"

    # Once the request timeout (10 minutes by default) has passed, the reaper
    # ends the request; its two tasks are still to be done, so it runs on.
    passed(engine, timedelta(minutes=11))
    reap(engine)
    row = operation_row(engine, request_id)
    assert row["state"] == "running" and row["request_deadline"] is None

    worker = Worker(engine, ["provision", "configure"], host="w1")
    while (job := worker.claim()) is not None:
        with job:
            pass
    row = operation_row(engine, request_id)
    assert (row["state"], row["tasks_succeeded"]) == ("succeeded", 2)
