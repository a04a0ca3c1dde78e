"""A real Celery worker running the bridge is a live worker from its start to its shutdown."""

from __future__ import annotations

import signal
import socket

from sqlalchemy.engine import Engine

from tasktoolkit.orm._registry import LiveWorker, list_workers
from tests.celery.conftest import Workers, wait_for


def celery_workers(engine: Engine) -> dict[str, LiveWorker]:
    with engine.connect() as conn:
        return {w.id: w for w in list_workers(conn) if w.kind == "celery"}


def test_a_celery_worker_announces_itself_and_leaves_at_shutdown(
    idle_workers: Workers, engine: Engine
) -> None:
    node = f"a@{socket.gethostname()}"
    assert node not in celery_workers(engine)
    idle_workers.start("a")
    wait_for(lambda: node in celery_workers(engine), "worker a announced")
    found = celery_workers(engine)[node]
    assert found.live and found.pid == idle_workers.processes["a"].pid
    assert found.names == ("brief", "doomed", "flaky", "hang", "polite", "quick", "slow")
    assert found.queues == (None, "host-a")  # Celery's default queue is the default queue
    process = idle_workers.processes.pop("a")
    process.send_signal(signal.SIGTERM)  # a warm shutdown
    process.wait(timeout=30)
    assert node not in celery_workers(engine)
