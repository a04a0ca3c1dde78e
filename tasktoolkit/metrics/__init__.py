"""Prometheus metrics of the toolkit (extra ``[metrics]``: ``prometheus_client``).

Counters and histograms come from the :class:`Metrics` hook, which hears of
everything the toolkit does after it is committed; the gauges of what the
database holds are read when Prometheus scrapes:

=============================================  =====================================
``tasktoolkit_tasks{name,queue,state}``        active tasks (database, at scrape)
``tasktoolkit_oldest_pending_age_seconds``     the oldest ready pending task's wait,
``{name,queue}``                               by name and queue (database)
``tasktoolkit_task_queue_seconds{name}``       creation to first start (histogram)
``tasktoolkit_task_run_seconds{name,outcome}`` each attempt's run (histogram)
``tasktoolkit_task_finished_total``            tasks finished, by final state and
``{name,outcome,error_code}``                  error code
``tasktoolkit_reaped_total{reason}``           what the reaper moved
``tasktoolkit_purged_total{table}``            expired rows purge deleted
``tasktoolkit_operations_finished_total``      operations finished, by final state
``{outcome}``
``tasktoolkit_database_unavailable_total``     database outages the toolkit degraded
``{where}``                                    through
=============================================  =====================================

Under gunicorn or uWSGI set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory
before the server starts: every worker process writes its counts there and a
scrape of any of them sums them all. ``docs/operations.md`` has the alerts.

Example::

    from tasktoolkit.metrics import Metrics, metrics_app

    toolkit = Toolkit(engine, Settings(hooks=[Metrics()]))
    app = DispatcherMiddleware(toolkit.wsgi(api), {"/metrics": metrics_app(toolkit)})
    serve_metrics(toolkit, 9100)                     # or, in a worker process, a port
"""

from __future__ import annotations

try:
    import prometheus_client  # noqa: F401
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "tasktoolkit.metrics needs prometheus_client: pip install 'tasktoolkit[metrics]'"
    ) from exc

from tasktoolkit.metrics._app import MULTIPROC_DIR, metrics_app, metrics_registry, serve_metrics
from tasktoolkit.metrics._database import DatabaseCollector, active_tasks
from tasktoolkit.metrics._hook import SECONDS_BUCKETS, Metrics

__all__ = [
    "MULTIPROC_DIR",
    "SECONDS_BUCKETS",
    "DatabaseCollector",
    "Metrics",
    "active_tasks",
    "metrics_app",
    "metrics_registry",
    "serve_metrics",
]
