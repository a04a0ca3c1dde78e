"""The :class:`Metrics` hook: counters and histograms fed by what the toolkit tells its hooks."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram

from tasktoolkit.hooks import Event, Hook
from tasktoolkit.orm._reaper import REAP_REASONS
from tasktoolkit.orm._states import TERMINAL_TASK_STATES, TaskState
from tasktoolkit.signals import OperationChange, TaskChange

__all__ = ["SECONDS_BUCKETS", "Metrics"]

#: The buckets of the queue and run times: from 5 ms (a task started at once)
#: to an hour (a task that waited for a worker all that time).
SECONDS_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    float("inf"),
)


class Metrics(Hook):
    """Prometheus metrics of what the toolkit does (extra ``[metrics]``): add it to the hooks.

    Every process that spawns, runs, reaps or purges tasks counts what it did
    here, after commit: attempts and their times, finished tasks and
    operations, reaper and purge batches, database outages. Under gunicorn or
    uWSGI set ``PROMETHEUS_MULTIPROC_DIR`` (``prometheus_client``'s
    multiprocess mode) and a scrape of any worker sums them all. The gauges
    of what the database holds (active tasks, the oldest pending one) are
    read at scrape time by :func:`~tasktoolkit.metrics.metrics_app`.

    :param registry: where the metrics are registered; a registry of their own
        by default (so that two toolkits in one process never clash).

    Example::

        toolkit = Toolkit(engine, Settings(hooks=[Metrics()]))
        app = DispatcherMiddleware(toolkit.wsgi(api), {"/metrics": metrics_app(toolkit)})
    """

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.queue_seconds = Histogram(
            "tasktoolkit_task_queue_seconds",
            "Seconds from a task's creation to its first start.",
            ["name"],
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "tasktoolkit_task_run_seconds",
            "Seconds each attempt of a task ran, by its outcome (succeeded, failed, cancelled, "
            "handed_back).",
            ["name", "outcome"],
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.finished = Counter(
            "tasktoolkit_task_finished",
            "Tasks that reached a final state, by that state and error code.",
            ["name", "outcome", "error_code"],
            registry=self.registry,
        )
        self.reaped = Counter(
            "tasktoolkit_reaped",
            "What the reaper moved, by reason: tasks whose worker was lost (worker_lost) or "
            "that were not started in time (not_started), operations whose request was lost "
            "(request_lost) or whose tasks vanished with their resource (orphaned).",
            ["reason"],
            registry=self.registry,
        )
        self.purged = Counter(
            "tasktoolkit_purged",
            "Expired records purge deleted, by table (tasks, operations).",
            ["table"],
            registry=self.registry,
        )
        self.operations_finished = Counter(
            "tasktoolkit_operations_finished",
            "Operations that reached a final state, by that state.",
            ["outcome"],
            registry=self.registry,
        )
        self.unavailable = Counter(
            "tasktoolkit_database_unavailable",
            "Times the toolkit degraded because the database was unavailable, by where.",
            ["where"],
            registry=self.registry,
        )

        # The series every deployment has, at zero until they count: a rate is
        # defined from the first scrape, and an alert on them never sees "no data".
        for reason in REAP_REASONS:
            self.reaped.labels(reason)
        for table in ("tasks", "operations"):
            self.purged.labels(table)
        for state in TERMINAL_TASK_STATES:
            self.operations_finished.labels(state)

    def task_moved(self, change: TaskChange) -> None:
        if change.old_state is None:
            return  # created: the database gauges count it
        if change.new_state == TaskState.RUNNING and change.attempt == 1:
            waited = _seconds(change.created_at, change.moved_at)
            if waited is not None:
                self.queue_seconds.labels(change.name).observe(waited)
        if change.outcome is not None:
            ran = _seconds(change.started_at, change.moved_at)
            if ran is not None:
                self.run_seconds.labels(change.name, change.outcome).observe(ran)
        if change.new_state in TERMINAL_TASK_STATES:
            failed = change.new_state == TaskState.FAILED
            code = (change.error_code or "") if failed else ""  # a retry's code stays on success
            self.finished.labels(change.name, change.new_state, code).inc()

    def operation_changed(self, change: OperationChange) -> None:
        if change.state in TERMINAL_TASK_STATES:  # an operation ends in the same three
            self.operations_finished.labels(change.state).inc()

    def happened(self, event: Event) -> None:
        if event.kind == "reaped":
            self.reaped.labels(event.reason or "").inc(event.count)
        elif event.kind == "purged":
            self.purged.labels(event.reason or "").inc(event.count)

    def database_unavailable(self, where: str, error: BaseException) -> None:
        self.unavailable.labels(where).inc()


def _seconds(since: datetime | None, until: datetime | None) -> float | None:
    if since is None or until is None:
        return None
    return max(0.0, (until - since).total_seconds())
