"""A worker in a process of its own, for the tests that signal, kill or cut it off.

``python -m tests.orm.worker_process URL MODE [SECONDS [EVERY]]``; it never
imports the test models: a worker enforces each task's rules from its row alone.

- ``hold``: claim one ``hold`` task and heartbeat until killed;
- ``graceful``: claim one ``hold`` task and work on it for ever; on SIGTERM, stop
  with a grace period of SECONDS (the task is then handed back) and exit 0;
- ``work``: run ``work`` tasks of SECONDS each, reporting progress every EVERY
  seconds (0.1 by default), until none is left; claims and outcomes ride out a
  database that goes away for a while;
- ``read``: as ``work``, but each step of a job reads the database itself (a
  job's own code), so that an outage meets the job, not only its reports;
- ``claim``: claim one ``hold`` task if one is ready, print its id (or ``none``)
  and exit, leaving it running;
- ``idle``: wait for ``hold`` tasks that never come, beating as an idle worker
  does; on SIGTERM, stop, leave the list of workers and exit 0.
- ``order``: as ``work``, for the tasks of ``tests/orm/test_ordering.py`` (a chain
  ``wire``, ``dhcp``, ``secure``, and the exclusive ``one_at_a_time``).
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from types import FrameType

from sqlalchemy import create_engine, text

from tasktoolkit.errors import TaskToolkitError, database_unavailable
from tasktoolkit.orm import Job, Worker, prepare_engine

STEP = 0.1


def claim(worker: Worker) -> Job | None:
    """A claim that waits out a database outage."""
    while True:
        try:
            return worker.claim()
        except Exception as exc:  # a driver's own error too (see database_unavailable)
            if not database_unavailable(exc):
                raise
            time.sleep(0.2)


def hold(worker: Worker) -> None:
    job = claim(worker)
    assert job is not None
    while True:
        job.heartbeat()
        time.sleep(STEP)


def graceful(worker: Worker, grace: float) -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        worker.stop(grace)

    signal.signal(signal.SIGTERM, stop)
    job = claim(worker)
    assert job is not None
    with job:
        while True:
            job.check_cancelled()
            worker.wait(STEP)


def idle(worker: Worker) -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        worker.stop(0)

    signal.signal(signal.SIGTERM, stop)
    while not worker.stopping:
        worker.claim(["nothing"], wait=1.0)
    worker.close()


def work(worker: Worker, seconds: float, *, every: float = STEP, reads: bool = False) -> None:
    idle = 0
    while idle < 3:
        job = claim(worker)
        if job is None:
            idle += 1
            time.sleep(0.2)
            continue
        idle = 0
        try:
            with job:
                steps = max(1, round(seconds / every))
                for step in range(steps):
                    time.sleep(every)
                    if reads:
                        with worker.transaction() as session:
                            session.execute(text("SELECT 1"))
                    job.progress(100 * (step + 1) // steps)
        except TaskToolkitError as exc:  # recorded by a try that the outage cut short
            logging.warning("%s: %s", job.id, exc)


def main(url: str, mode: str, seconds: float, every: float = STEP) -> None:
    engine = prepare_engine(create_engine(url))
    names = {
        "work": ["work"],
        "read": ["work"],
        "order": ["wire", "dhcp", "secure", "one_at_a_time"],
    }.get(mode, ["hold"])
    worker = Worker(engine, names)
    if mode == "claim":
        job = claim(worker)
        print(job.id if job is not None else "none", flush=True)
    elif mode == "hold":
        hold(worker)
    elif mode == "graceful":
        graceful(worker, seconds)
    elif mode == "idle":
        idle(worker)
    else:
        work(worker, seconds, every=min(every, seconds), reads=mode == "read")
    engine.dispose()


if __name__ == "__main__":
    numbers = [float(n) for n in sys.argv[3:5]]
    main(sys.argv[1], sys.argv[2], *(numbers or [1.0]))
