"""Run the toolkit's tasks on Celery (extra ``[celery]``), over RabbitMQ or Redis.

A spawned task is published once its transaction commits; a message is only
the task id, and starting the task is a compare-and-set, so a second delivery
runs nothing. A task left unpublished (broker down, process gone) is
published again by :meth:`CeleryBridge.sweep` (``tasktoolkit reap --celery``).
Heartbeats, progress, cancellation, retries and attempts are the toolkit's.

Example (one module, imported by the API and by ``celery -A myapp.tasks worker``)::

    from tasktoolkit.celery import CeleryBridge

    bridge = CeleryBridge("redis://127.0.0.1:6379/0", engine)
    app = bridge.app

    @bridge.handler("l2_wiring")
    def wire(job):
        for step in range(10):
            job.check_cancelled()
            ...
"""

from __future__ import annotations

from tasktoolkit.celery._bridge import CeleryBridge, Handler
from tasktoolkit.celery._config import BROKER_SCHEMES, check_broker_url

__all__ = ["BROKER_SCHEMES", "CeleryBridge", "Handler", "check_broker_url"]
