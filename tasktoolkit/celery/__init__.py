"""Run the toolkit's tasks on Celery (extra ``[celery]``), over RabbitMQ or Redis.

:class:`CeleryBridge` is the Celery backend of the bridge base
(:mod:`tasktoolkit.bridges`). A spawned task is published once its transaction
commits; a message is only the task id, and starting the task is a
compare-and-set, so a second delivery runs nothing. A task left unpublished
(broker down, process gone), or published but not started in time (the
broker lost the message), is published again by :meth:`CeleryBridge.sweep`.
Heartbeats, progress, cancellation, retries and attempts are the toolkit's;
Celery's task states, events and results say what the toolkit recorded
(:class:`TaskFailed` for a failed task).

Example (one module, imported by the API and by ``celery -A myapp.tasks worker``)::

    from tasktoolkit import Settings, Toolkit
    from tasktoolkit.celery import CeleryBridge

    toolkit = Toolkit(engine, Settings())
    bridge = CeleryBridge(toolkit, "redis://127.0.0.1:6379/0")
    app = bridge.app

    @bridge.handler("l2_wiring")
    def wire(job):
        for step in range(10):
            job.check_cancelled()
            ...
"""

from __future__ import annotations

from tasktoolkit.celery._bridge import CeleryBridge
from tasktoolkit.celery._config import BROKER_SCHEMES, check_broker_url
from tasktoolkit.celery._outcome import TaskCancelled, TaskFailed

__all__ = ["BROKER_SCHEMES", "CeleryBridge", "TaskCancelled", "TaskFailed", "check_broker_url"]
