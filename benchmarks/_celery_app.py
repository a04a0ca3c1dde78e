"""The Celery app the ``celery_dispatch`` benchmark runs a worker of.

``celery -A benchmarks._celery_app worker``: the database is
``TASKTOOLKIT_BENCH_DB_URL``, the broker ``TASKTOOLKIT_BENCH_BROKER_URL``; every
start (of the bridge's handler and of the bare task) is appended to
``TASKTOOLKIT_BENCH_STARTS`` as ``<id> <time.time()>``.
"""

from __future__ import annotations

import os
import time

from sqlalchemy import create_engine

from benchmarks.celery_dispatch import BARE, BRIDGED
from tasktoolkit import Toolkit
from tasktoolkit.celery import CeleryBridge
from tasktoolkit.orm import Job
from tests import models  # noqa: F401  (the resource types)

toolkit = Toolkit(create_engine(os.environ["TASKTOOLKIT_BENCH_DB_URL"], pool_size=2))
bridge = CeleryBridge(toolkit, os.environ["TASKTOOLKIT_BENCH_BROKER_URL"])
app = bridge.app


def _started(task_id: str) -> None:
    fd = os.open(os.environ["TASKTOOLKIT_BENCH_STARTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{task_id} {time.time()!r}\n".encode())
    finally:
        os.close(fd)


@bridge.handler(BRIDGED)
def bridged(job: Job) -> None:
    _started(job.id)


@app.task(name=BARE, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def bare(marker: str) -> None:
    _started(marker)
