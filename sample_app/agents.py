"""The sample's agents: worker threads that run the port tasks with the toolkit's worker API.

Each task "works" for ``task_delay`` seconds in five steps, reporting progress
(which is also its heartbeat) and stopping when asked to cancel. Nothing is
really wired: the point is the task records an API consumer sees.

Failure injection: a port whose name starts with ``fail-<task name>``
(``fail-dhcp_provisioning``, ``fail-unbind``) makes that task fail half way,
with error code ``injected_failure`` and a message saying why. A port whose
name starts with ``flaky-<task name>`` makes that task's first attempt fail
the same way but *retryably*: it goes back to ``pending`` and its second
attempt (the sample's tasks have two) succeeds.

Stopping: :meth:`Agents.stop` stops claiming, lets each running task finish
within a grace period, and hands back those still running then as
``pending`` (another agent takes them at once; not a failed attempt).

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
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from sample_app.models import PORT_DELETE_TASK, PORT_TASKS, Port
from tasktoolkit import Settings
from tasktoolkit.errors import TaskFailure, TaskToolkitError, database_unavailable
from tasktoolkit.hooks import Outage
from tasktoolkit.orm import Job, Worker, reap

__all__ = [
    "INJECTED_FAILURE",
    "PEER_TASK",
    "PEER_UNAVAILABLE",
    "STEPS",
    "UNEXPECTED_ERROR",
    "Agents",
    "do_job",
    "run_job",
    "tell_peer",
]

log = logging.getLogger(__name__)

#: The error code of a task failed on purpose (``fail-<task name>`` ports).
INJECTED_FAILURE = "injected_failure"
#: The error code of a task whose work raised an unexpected exception.
UNEXPECTED_ERROR = "worker_error"
#: The error code of a task whose peer did not answer (retried).
PEER_UNAVAILABLE = "peer_unavailable"
#: The task that tells the peer of a port, when there is a peer.
PEER_TASK = "l2_wiring"
#: Progress reports per task.
STEPS = 5
#: Longest an agent goes without a heartbeat while it works, in seconds.
HEARTBEAT_EVERY = 2.0
#: Seconds a stopping agent lets its task run before handing it back.
GRACE = 5.0


def _port(worker: Worker, port_id: str) -> tuple[str | None, str | None]:
    """The port's name and project (``None``, ``None`` once it is gone)."""
    with worker.transaction() as session:
        row = session.execute(select(Port.name, Port.project_id).where(Port.id == port_id)).first()
    return (None, None) if row is None else (row.name, row.project_id)


def tell_peer(peer_url: str, job: Job, project_id: str | None) -> str:
    """Tell a peer service of the port ``job`` wires (a network named after it, there); the
    peer's network id.

    A stand-in for a call to another OpenStack service (Neutron tells Nova of its
    ports): through a keystoneauth ``Adapter`` over the toolkit's
    :class:`~tasktoolkit.outgoing.KeystoneSession`, so the call carries the id of
    the request that created the port, which the peer records as its operation's
    ``global_request_id``.

    :raises TaskFailure: ``peer_unavailable`` (retryable) when the peer does not answer 201.
    """
    from keystoneauth1 import adapter
    from keystoneauth1 import exceptions as ks_exceptions

    from tasktoolkit.outgoing import KeystoneSession

    session = KeystoneSession(timeout=10)
    peer = adapter.Adapter(
        session,
        endpoint_override=peer_url,
        additional_headers={"X-Project-Id": project_id or ""},
        raise_exc=False,
    )
    name = f"{job.name} of port {job.resource_id}"
    try:
        reply = peer.post("/networks", json={"network": {"name": name}})
    except ks_exceptions.ClientException as exc:
        raise TaskFailure(PEER_UNAVAILABLE, f"{peer_url}: {exc}", retryable=True) from None
    finally:
        session.session.close()
    if reply.status_code != 201:
        raise TaskFailure(
            PEER_UNAVAILABLE, f"{peer_url} answered {reply.status_code}", retryable=True
        )
    return str(reply.json()["network"]["id"])


def _pause(job: Job, seconds: float) -> None:
    """Wait ``seconds``, heartbeating at least every :data:`HEARTBEAT_EVERY` seconds.

    When the agent stops, it goes on until the grace period ends; then
    ``check_cancelled`` raises ``WorkerStopping`` and the job hands its task back.
    """
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        job.worker.wait(min(left, HEARTBEAT_EVERY))
        job.check_cancelled()


def _injected(job: Job, port_name: str | None) -> TaskFailure | None:
    """The failure ``port_name`` asks of this job, if any (see the module docs)."""
    if not port_name:
        return None
    why = f"{job.name} failed on purpose: the port's name {port_name!r} starts with"
    if port_name.startswith(f"fail-{job.name}"):
        return TaskFailure(INJECTED_FAILURE, f"{why} 'fail-{job.name}'")
    if port_name.startswith(f"flaky-{job.name}") and job.attempts == 1:
        return TaskFailure(
            INJECTED_FAILURE, f"{why} 'flaky-{job.name}' (first attempt only)", retryable=True
        )
    return None


def _work(job: Job, port_name: str | None, task_delay: float) -> None:
    """Pretend to do ``job``: ``STEPS`` steps, progress after each, cancellable."""
    failure = _injected(job, port_name)
    for step in range(STEPS):
        job.check_cancelled()
        _pause(job, task_delay / STEPS)
        if failure is not None and step == STEPS // 2:
            raise failure
        job.progress(100 * (step + 1) // STEPS, f"step {step + 1} of {STEPS}")


def run_job(worker: Worker, job: Job, *, task_delay: float, peer_url: str | None = None) -> None:
    """Run one claimed port task to its end, recording the outcome (see :class:`Job`)."""
    with job:
        do_job(worker, job, task_delay=task_delay, peer_url=peer_url)


def do_job(worker: Worker, job: Job, *, task_delay: float, peer_url: str | None = None) -> None:
    """The work of one claimed port task, inside its ``with job:`` block (a database
    agent's, or the Celery bridge's).

    :param peer_url: a peer to tell of each port wired (:func:`tell_peer`), by ``l2_wiring``.
    """
    port_name, project_id = _port(worker, job.resource_id)
    _work(job, port_name, task_delay)
    if job.name != PORT_DELETE_TASK:
        # What the agent did, shown as the task's result to every member of the
        # project: never the agent's host, which only admins see (the task's own).
        result: dict[str, Any] = {"port_name": port_name}
        if peer_url is not None and job.name == PEER_TASK:
            result["peer_network_id"] = tell_peer(peer_url, job, project_id)
        job.succeed(result=result)
        return
    # Success and the delete in one transaction: either the port is gone
    # with its tasks and the operation counts the success, or nothing happened.
    with worker.transaction() as session:
        job.succeed("unbound; port deleted", session=session)
        session.execute(
            delete(Port).where(Port.id == job.resource_id),
            execution_options={"synchronize_session": False},
        )


class Agents:
    """``count`` worker threads running the port tasks until stopped, and a reaper.

    :param engine: the database (the API's).
    :param count: how many worker threads; 0 runs none (the reaper still runs).
    :param task_delay: seconds each task takes.
    :param idle_wait: seconds an idle agent waits for a task in one claim: on
        PostgreSQL a spawn wakes it at once; elsewhere it polls meanwhile (50 ms,
        doubling up to 1 s).
    :param reap_interval: seconds between two runs of the toolkit's reaper, which
        enforces every deadline: tasks of agents that died (re-queued or failed),
        tasks no agent started in time (``not_started``), requests that never
        ended, and operations whose tasks vanished while active; 0 runs no reaper.
    :param start_timeout: the reaper also fails tasks pending longer than this
        since their spawn (seconds), whatever their rules; ``None``: their rules.
    :param grace: seconds a stopping agent lets its task run before handing it back.
    :param sweeps: also called after each run of the reaper: a Celery bridge's
        ``sweep``, which publishes the tasks left unpublished, notifications' ``sweep``,
        which sends the operation ends never sent.
    :param peer_url: a peer service the agents tell of each port they wire (:func:`tell_peer`).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        count: int = 2,
        task_delay: float = 0.5,
        idle_wait: float = 5.0,
        reap_interval: float = 1.0,
        start_timeout: float | None = None,
        grace: float = GRACE,
        sweeps: Sequence[Callable[[], int]] = (),
        peer_url: str | None = None,
    ) -> None:
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an integer >= 0, got {count!r}")
        if task_delay < 0 or idle_wait <= 0 or reap_interval < 0 or grace < 0:
            raise ValueError("task_delay, reap_interval and grace must be >= 0, idle_wait > 0")
        if start_timeout is not None and start_timeout < 1:
            raise ValueError(f"start_timeout must be at least 1 second, got {start_timeout!r}")
        self.engine = engine
        self.count = count
        self.task_delay = task_delay
        self.idle_wait = idle_wait
        self.reap_interval = reap_interval
        #: The reaper's knobs: how often it passes.
        self.settings = Settings(reap_every=reap_interval or 1)
        self.start_timeout = None if start_timeout is None else timedelta(seconds=start_timeout)
        self.grace = grace
        self.sweeps = tuple(sweeps)
        self.peer_url = peer_url
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers: list[Worker] = []

    def start(self) -> None:
        """Start the threads."""
        base = Worker.default_host()
        for i in range(self.count):
            # Each thread claims on its own, so each gets its own worker identity.
            worker = Worker(self.engine, PORT_TASKS, host=f"{base}:agent-{i}")
            self._workers.append(worker)
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
        """Stop claiming; tasks still running after the grace period are handed back."""
        self._stop.set()
        for worker in self._workers:
            worker.stop(self.grace)
        for thread in self._threads:
            thread.join()
        for worker in self._workers:
            worker.close()  # the process's LISTEN connection goes with its last user
        self._threads.clear()
        self._workers.clear()

    def __enter__(self) -> Agents:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, worker: Worker) -> None:
        while not worker.stopping:
            try:
                # Woken by the spawn's NOTIFY on PostgreSQL; polling (with
                # backoff up to 1 s) elsewhere.
                job = worker.claim(wait=self.idle_wait)
                if job is None:
                    continue
                run_job(worker, job, task_delay=self.task_delay, peer_url=self.peer_url)
            except TaskToolkitError as exc:
                # The task went away (its port was deleted) or the reaper took it.
                log.info("%s: %s", worker.host, exc)
            except Exception:
                log.exception("%s: unexpected error; retrying shortly", worker.host)
                worker.wait(1.0)

    def _reap(self) -> None:
        outage = Outage(log, "reaper")  # one line for the outage, one when it is back
        while not self._stop.wait(self.reap_interval):
            try:
                result = reap(self.engine, settings=self.settings, start_timeout=self.start_timeout)
                swept = sum(sweep() for sweep in self.sweeps)
            except Exception as exc:
                if not database_unavailable(exc):
                    log.exception("reaper: unexpected error; trying again later")
                else:
                    outage.failed(exc, f"trying again every {self.reap_interval:g} s")
                continue
            outage.over()
            if swept:
                log.warning("sweepers: %d tasks or operation ends left unsent sent", swept)
            if result.total:
                log.warning(
                    "reaper: %d lost tasks failed, %d re-queued, %d cancelled, %d not started",
                    len(result.failed),
                    len(result.requeued),
                    len(result.cancelled),
                    len(result.not_started),
                )
            if result.requests or result.operations:
                log.warning(
                    "reaper: %d lost requests ended, %d orphaned operations finished",
                    len(result.requests),
                    len(result.operations),
                )
