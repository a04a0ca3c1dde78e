"""The sample's agents: worker threads that run the port tasks with the toolkit's worker API.

Each task "works" for ``task_delay`` seconds in five steps, reporting progress
(which is also its heartbeat) and stopping when asked to cancel. Nothing is
really wired: the point is the task records an API consumer sees.

Failure injection: a port whose name starts with ``fail-<task name>``
(``fail-dhcp_provisioning``, ``fail-unbind``) makes that task fail half way,
with error code ``injected_failure`` and a message saying why.

``unbind`` is special: when it succeeds, the port row is deleted in the same
transaction that records the success, so the port's tasks go with it (the
database cascade) while the operation keeps its ``task_counts``.

Example::

    with Agents(engine, count=2, task_delay=0.5):
        ...  # serve the API; the agents run the tasks it spawns
"""

from __future__ import annotations

import logging
import threading
import time
import traceback

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from sample_app.models import PORT_DELETE_TASK, PORT_TASKS, Port
from tasktoolkit.errors import TaskCancelRequested, TaskFailure, TaskToolkitError
from tasktoolkit.orm import Job, Worker, reap

__all__ = [
    "INJECTED_FAILURE",
    "STEPS",
    "UNEXPECTED_ERROR",
    "AgentStopping",
    "Agents",
    "run_job",
]

log = logging.getLogger(__name__)

#: The error code of a task failed on purpose (``fail-<task name>`` ports).
INJECTED_FAILURE = "injected_failure"
#: The error code of a task whose work raised an unexpected exception.
UNEXPECTED_ERROR = "worker_error"
#: Progress reports per task.
STEPS = 5
#: Longest an agent goes without a heartbeat while it works, in seconds.
HEARTBEAT_EVERY = 2.0


class AgentStopping(BaseException):
    """The agent is shutting down (a ``BaseException``: the job records nothing)."""


def _port_name(worker: Worker, port_id: str) -> str | None:
    with worker.transaction() as session:
        return session.execute(select(Port.name).where(Port.id == port_id)).scalar()


def _pause(job: Job, seconds: float, stop: threading.Event) -> None:
    """Wait ``seconds``, heartbeating at least every :data:`HEARTBEAT_EVERY` seconds."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop.wait(min(left, HEARTBEAT_EVERY)):
            # The agent is stopping: leave the task running for the reaper, as a
            # crashed worker would, rather than pretend it was done.
            raise AgentStopping
        job.check_cancelled()
    if stop.is_set():
        raise AgentStopping


def _work(job: Job, port_name: str | None, task_delay: float, stop: threading.Event) -> None:
    """Pretend to do ``job``: ``STEPS`` steps, progress after each, cancellable."""
    fail_at = STEPS // 2 if port_name and port_name.startswith(f"fail-{job.name}") else None
    for step in range(STEPS):
        job.check_cancelled()
        _pause(job, task_delay / STEPS, stop)
        if step == fail_at:
            raise TaskFailure(
                INJECTED_FAILURE,
                f"{job.name} failed on purpose: the port's name {port_name!r} "
                f"starts with 'fail-{job.name}'",
            )
        job.progress(100 * (step + 1) // STEPS, f"step {step + 1} of {STEPS}")


def run_job(
    worker: Worker, job: Job, *, task_delay: float, stop: threading.Event | None = None
) -> None:
    """Run one claimed port task to its end, recording the outcome.

    :param stop: set to abandon the task (it stays ``running`` until the reaper).
    """
    stop = stop or threading.Event()
    port_name = _port_name(worker, job.resource_id)
    if job.name != PORT_DELETE_TASK:
        with job:
            _work(job, port_name, task_delay, stop)
            # What the agent did, shown as the task's result.
            job.succeed(result={"agent": worker.host, "port_name": port_name})
        return
    try:
        _work(job, port_name, task_delay, stop)
    except TaskCancelRequested:
        job.acknowledge_cancel("cancelled as requested; the port is kept")
        return
    except TaskFailure as failure:
        job.fail(failure.error_code, failure.message)
        return
    except Exception as exc:
        # Recorded as the toolkit's Job records an unexpected error, then re-raised.
        job.fail(UNEXPECTED_ERROR, str(exc) or type(exc).__name__, traceback.format_exc())
        raise
    # Success and the delete in one transaction: either the port is gone with
    # its tasks and the operation counts the success, or nothing happened.
    with worker.transaction() as session:
        job.succeed("unbound; port deleted", session=session)
        session.execute(
            delete(Port).where(Port.id == job.resource_id),
            execution_options={"synchronize_session": False},
        )


class Agents:
    """``count`` worker threads running the port tasks until stopped.

    :param engine: the database (the API's).
    :param count: how many worker threads; 0 runs none (the reaper may still run).
    :param task_delay: seconds each task takes.
    :param poll_interval: seconds an idle agent waits before looking again.
    :param reap_interval: seconds between two runs of the toolkit's reaper, which
        fails (or re-queues) the tasks of agents that died and settles operations
        whose tasks vanished while active; 0 runs no reaper.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        count: int = 2,
        task_delay: float = 0.5,
        poll_interval: float = 0.05,
        reap_interval: float = 10.0,
    ) -> None:
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an integer >= 0, got {count!r}")
        if task_delay < 0 or poll_interval <= 0 or reap_interval < 0:
            raise ValueError("task_delay and reap_interval must be >= 0, poll_interval > 0")
        self.engine = engine
        self.count = count
        self.task_delay = task_delay
        self.poll_interval = poll_interval
        self.reap_interval = reap_interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the threads."""
        base = Worker.default_host()
        for i in range(self.count):
            # Each thread claims on its own, so each gets its own worker identity.
            worker = Worker(self.engine, PORT_TASKS, host=f"{base}:agent-{i}")
            thread = threading.Thread(
                target=self._run, args=(worker,), name=f"sample-agent-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if self.reap_interval:
            thread = threading.Thread(target=self._reap, name="sample-reaper", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the threads; a task in progress is left to the reaper."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def __enter__(self) -> Agents:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, worker: Worker) -> None:
        while not self._stop.is_set():
            try:
                job = worker.claim()
                if job is None:
                    self._stop.wait(self.poll_interval)
                    continue
                run_job(worker, job, task_delay=self.task_delay, stop=self._stop)
            except AgentStopping:
                return
            except TaskToolkitError as exc:
                # The task went away (its port was deleted) or the reaper took it.
                log.info("%s: %s", worker.host, exc)
            except Exception:
                log.exception("%s: unexpected error; retrying shortly", worker.host)
                self._stop.wait(1.0)

    def _reap(self) -> None:
        while not self._stop.wait(self.reap_interval):
            try:
                # Also settles operations whose active tasks vanished with their
                # resource (a delete outside the API), else running for ever.
                result = reap(self.engine)
            except Exception:
                log.exception("reaper: unexpected error; trying again later")
                continue
            if result.total:
                log.warning(
                    "reaper: %d lost tasks failed, %d re-queued, %d cancelled",
                    len(result.failed),
                    len(result.requeued),
                    len(result.cancelled),
                )
            if result.operations:
                log.warning("reaper: %d orphaned operations finished", len(result.operations))
