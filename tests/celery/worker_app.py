"""The Celery app of the bridge tests' real workers (``celery -A tests.celery.worker_app worker``).

Configured from the environment (set by :mod:`tests.celery.conftest`):
``TT_BROKER_URL``, ``TT_RESULT_URL`` (Celery's result backend), ``TT_DB_URL``,
``TT_RUNS`` (a file each handler appends one line to per event:
``<task id> <attempt> <event> <worker name> <pid>``), ``TT_DELIVERIES`` (a file
the toolkit's ``around_delivery`` hook appends ``<task id> enter`` and
``<task id> exit`` to) and ``TT_WORKER_NAME``.

Handlers:

- ``quick``: records ``ran``, reports progress, returns its pid as its result;
- ``hang``: records ``started``, then sleeps (never checking for cancellation)
  for up to a minute on its first attempt, ``finished`` if nothing stopped it;
  quick on later attempts;
- ``flaky``: records ``failed`` and fails retryably on its first attempt, ``ran`` after;
- ``polite``: records ``started``, then checks for cancellation every 50 ms
  for up to a minute;
- ``slow``: records ``started``, then sleeps for :data:`SLOW_SECONDS` in small
  steps without a heartbeat of its own (the bridge's background heartbeats
  alone keep it with its worker), records ``finished`` and returns;
- ``doomed``: records ``failed`` and fails for good (``TaskFailure``, not retryable);
- ``brief``: records ``started``, sleeps :data:`BRIEF_SECONDS`, records ``finished``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine

from tasktoolkit import Settings, Toolkit
from tasktoolkit.celery import CeleryBridge
from tasktoolkit.errors import TaskFailure
from tasktoolkit.hooks import Delivery, Hook
from tasktoolkit.orm import Job
from tests import models  # noqa: F401  (the test resource types)

NAMES = ("quick", "hang", "polite", "flaky", "slow", "doomed", "brief")
#: How long the ``slow`` handler runs, in seconds.
SLOW_SECONDS = 5.0
#: How long the ``brief`` handler runs, in seconds.
BRIEF_SECONDS = 0.4


def append(variable: str, line: str) -> None:
    """Append ``line`` to the file named by ``variable`` (one ``write``, ``O_APPEND``)."""
    fd = os.open(os.environ[variable], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def record(job: Job, event: str) -> None:
    """Append one line for ``job`` to the runs file."""
    worker = os.environ.get("TT_WORKER_NAME", "-")
    append("TT_RUNS", f"{job.id} {job.attempts} {event} {worker} {os.getpid()}")


class Deliveries(Hook):
    """Records each delivery's way in and out (the runs and the skips alike)."""

    @contextmanager
    def around_delivery(self, delivery: Delivery) -> Iterator[None]:
        append("TT_DELIVERIES", f"{delivery.task_id} enter {delivery.bridge}")
        try:
            yield
        finally:
            append("TT_DELIVERIES", f"{delivery.task_id} exit {delivery.bridge}")


toolkit = Toolkit(create_engine(os.environ["TT_DB_URL"]), Settings(hooks=[Deliveries()]))
bridge = CeleryBridge(toolkit, os.environ["TT_BROKER_URL"])
app = bridge.app
app.conf.result_backend = os.environ.get("TT_RESULT_URL")


@bridge.handler("quick")
def quick(job: Job) -> dict[str, int]:
    record(job, "ran")
    job.progress(50, "half way")
    return {"pid": os.getpid()}


@bridge.handler("hang")
def hang(job: Job) -> None:
    if job.attempts > 1:
        record(job, "ran")
        return
    record(job, "started")
    try:
        time.sleep(60)
    except BaseException:
        record(job, "interrupted")
        raise
    record(job, "finished")


@bridge.handler("flaky")
def flaky(job: Job) -> None:
    if job.attempts == 1:
        record(job, "failed")
        raise TaskFailure("flaky", "the first attempt fails", retryable=True)
    record(job, "ran")


@bridge.handler("polite")
def polite(job: Job) -> None:
    record(job, "started")
    end = time.monotonic() + 60
    while time.monotonic() < end:
        job.check_cancelled()
        time.sleep(0.05)
    record(job, "finished")


@bridge.handler("slow")
def slow(job: Job) -> None:
    record(job, "started")
    end = time.monotonic() + SLOW_SECONDS
    while time.monotonic() < end:
        time.sleep(0.05)
    record(job, "finished")


@bridge.handler("doomed")
def doomed(job: Job) -> None:
    record(job, "failed")
    raise TaskFailure("doomed", "it always fails")


@bridge.handler("brief")
def brief(job: Job) -> None:
    record(job, "started")
    time.sleep(BRIEF_SECONDS)
    record(job, "finished")
