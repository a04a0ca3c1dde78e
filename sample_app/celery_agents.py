"""The sample's agents on Celery: the same port tasks, run by a Celery worker.

``python -m sample_app agents --broker URL`` runs a Celery worker whose
handlers do what the database agents do (:func:`sample_app.agents.do_job`);
``python -m sample_app serve --agents 0 --broker URL`` publishes the port
tasks the API spawns to it. Both sides build the same bridge with
:func:`make_bridge` from their toolkit; the API side also sweeps (a reaper
thread of :class:`~sample_app.agents.Agents` with ``count=0``).

Example::

    toolkit = Toolkit(engine, Settings(sweep_after="5s"))
    bridge = make_bridge(toolkit, "redis://127.0.0.1:6379/0", task_delay=0.5)
    run_worker(bridge, concurrency=2)    # until SIGTERM or Ctrl-C
"""

from __future__ import annotations

from sample_app.agents import Agents, do_job
from sample_app.models import PORT_TASKS
from tasktoolkit import Toolkit
from tasktoolkit.celery import CeleryBridge
from tasktoolkit.orm import Job

__all__ = ["make_bridge", "run_worker"]


def make_bridge(toolkit: Toolkit, broker_url: str, *, task_delay: float) -> CeleryBridge:
    """The bridge of the port tasks on ``broker_url``, with their handlers bound.

    :raises tasktoolkit.errors.InvalidBrokerError: not a RabbitMQ or Redis URL.
    """
    bridge = CeleryBridge(toolkit, broker_url)

    def handle(job: Job) -> None:
        do_job(bridge.worker(), job, task_delay=task_delay)

    for name in PORT_TASKS:
        bridge.handler(name)(handle)
    return bridge


def run_worker(
    bridge: CeleryBridge, *, concurrency: int, reaper: Agents | None = None, loglevel: str = "INFO"
) -> None:
    """Run a Celery worker of ``concurrency`` processes (prefork) on the bridge's app,
    consuming the default queue, until it is stopped (SIGTERM, Ctrl-C).

    :param reaper: started in the worker's main process once its pool processes
        are forked (no thread is forked with them), stopped when it shuts down.
    """
    from celery import signals

    if reaper is not None:
        signals.worker_ready.connect(lambda **_: reaper.start(), weak=False)
        signals.worker_shutdown.connect(lambda **_: reaper.stop(), weak=False)
    bridge.app.worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={max(concurrency, 1)}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
