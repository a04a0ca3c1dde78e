"""The gauges of what the database holds, read when Prometheus scrapes (cached a second)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Select, and_, bindparam, case, func, or_, select
from sqlalchemy.engine import Engine

from tasktoolkit.hooks import hooks_of
from tasktoolkit.orm._deadline import deadline
from tasktoolkit.orm._records import tasks_table as _T
from tasktoolkit.orm._registry import list_workers
from tasktoolkit.orm._states import ACTIVE_TASK_STATES, TaskState
from tasktoolkit.orm._types import UTCDateTime, utcnow
from tasktoolkit.settings import DEFAULT_DEADLINE

__all__ = ["CACHE_SECONDS", "DatabaseCollector", "active_tasks"]

#: How long one reading of the database answers scrapes.
CACHE_SECONDS = 1.0


def active_tasks() -> Select[Any]:
    """Per state, name and queue of the active tasks: how many, and, for ``pending``, the
    oldest time one of them became ready (its creation, the end of its retry's backoff, or
    when the last task it ran after succeeded; those still waiting for their backoff or on
    a prerequisite left out), ``:now`` being the time to compare.

    Read from ``ix_tasktoolkit_tasks_queue`` alone (state, queue, waiting_on, created_at,
    id, name, not_before) on every database: its cost follows the active tasks, never the history
    (``tests/metrics/test_database.py`` shows the plans).
    """
    ready_since = func.coalesce(_T.c.not_before, _T.c.created_at, type_=UTCDateTime())
    now = bindparam("now", type_=UTCDateTime())
    ready = and_(
        _T.c.state == TaskState.PENDING.value,
        _T.c.waiting_on == 0,
        or_(_T.c.not_before.is_(None), _T.c.not_before <= now),
    )
    return (
        select(
            _T.c.state,
            _T.c.name,
            _T.c.queue,
            func.count().label("tasks"),
            func.min(case((ready, ready_since)), type_=UTCDateTime()).label("ready_since"),
        )
        .where(_T.c.state.in_(ACTIVE_TASK_STATES))
        .group_by(_T.c.state, _T.c.name, _T.c.queue)
    )


class DatabaseCollector(Collector):
    """``tasktoolkit_tasks{name,queue,state}`` (active tasks),
    ``tasktoolkit_oldest_pending_age_seconds{name,queue}`` and
    ``tasktoolkit_workers{name,queue}`` (live workers serving each task name and
    queue), read from the database.

    Two statements per scrape at most (the active tasks; the workers' small
    table, read whole), their answer kept :data:`CACHE_SECONDS`
    (several Prometheus servers, or a dashboard, scraping at once cost one
    read). ``queue=""`` is the default queue. While the database is
    unavailable a scrape leaves these out and the rest is served: the
    toolkit's outage policy (one line logged, the hooks told, so
    ``tasktoolkit_database_unavailable_total{where="metrics.scrape"}`` counts it).

    :param seconds: the longest a read may wait for the database (``None``: no limit).
    """

    def __init__(self, engine: Engine, *, seconds: float | None = DEFAULT_DEADLINE) -> None:
        self.engine = engine
        self.seconds = seconds
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._families: list[Metric] = []
        self._query = active_tasks()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at >= CACHE_SECONDS:
                self._families = self._read()
                self._read_at = time.monotonic()
            families = self._families
        yield from families

    def _read(self) -> list[Metric]:
        now = utcnow()
        try:
            with deadline(self.seconds), self.engine.connect() as connection:
                rows = connection.execute(self._query, {"now": now}).all()
                found = list_workers(connection)
        except Exception as exc:
            if not hooks_of(self.engine).unavailable("metrics.scrape", exc):
                raise
            return []
        hooks_of(self.engine).available("metrics.scrape")
        tasks = GaugeMetricFamily(
            "tasktoolkit_tasks",
            "Active tasks (pending, running) in the database, by name, queue and state.",
            labels=["name", "queue", "state"],
        )
        oldest = GaugeMetricFamily(
            "tasktoolkit_oldest_pending_age_seconds",
            "Seconds the oldest pending task ready to start has waited (since its creation, or "
            "the end of its retry's backoff), by name and queue.",
            labels=["name", "queue"],
        )
        for state, name, queue, count, ready_since in rows:
            tasks.add_metric([name, queue or "", state], count)
            if isinstance(ready_since, datetime):
                age = max(0.0, (now - ready_since).total_seconds())
                oldest.add_metric([name, queue or ""], age)
        served: dict[tuple[str, str], int] = {}
        for worker in found:
            if worker.live:
                for name in worker.names:
                    for queue in worker.queues:
                        key = (name, queue or "")
                        served[key] = served.get(key, 0) + 1
        workers = GaugeMetricFamily(
            "tasktoolkit_workers",
            "Live workers (that beat within their timeout) serving each task name and queue.",
            labels=["name", "queue"],
        )
        for (name, queue), count in sorted(served.items()):
            workers.add_metric([name, queue], count)
        return [tasks, oldest, workers]
