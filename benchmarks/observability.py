"""What observability costs: a POST with metrics and tracing on, and a scrape at a million rows.

Two figures, each measured side by side in one run:

- ``metrics_post_ratio``: ``POST /ports`` (one port, four tasks, as in
  ``post_overhead``) through the toolkit's middlewares with the
  :class:`~tasktoolkit.metrics.Metrics` and :class:`~tasktoolkit.tracing.Tracing`
  hooks on, against the same stack with no hooks (bar: <= 1.05). Tracing runs
  on the real OpenTelemetry SDK (every span sampled, a batch processor, an
  exporter that drops what it is given), as a host with ``opentelemetry-instrument``
  runs it, short of the network. The stacks share one pool, each on an engine
  of its own options (where a toolkit's hooks ride), interleaved; a second stack
  with no hooks beside them gives ``metrics_post_noise_ratio``, the same
  request against itself: how far apart two equal stacks land on this machine.
- ``metrics_scrape_ms_1m``: one scrape of ``metrics_app`` (the database gauges
  read afresh, not from their one-second cache, and every counter) with the
  tasks table at 1,000,000 rows, filled as ``list_scaling`` fills it: a fixed
  work in progress of 1,000 active tasks beside a growing history (bar: < 50 ms).
  Its query's plan is printed. With ``--quick`` the table has 100,000 rows (the
  figure keeps its name; the table says so).

Warning: drops and re-creates the toolkit's and the sample's tables in the
database at ``--db-url``.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from benchmarks._harness import Bench, drain, fresh_engine, interleaved
from benchmarks.list_scaling import _explain, _Fill, _statements
from benchmarks.post_overhead import _wal, port_app, request
from sample_app.models import Network
from tasktoolkit import Settings, Toolkit, orm
from tasktoolkit.metrics import Metrics, metrics_app
from tasktoolkit.tracing import Tracing

NAME = "observability"


class _Dropped(SpanExporter):
    """An exporter that sends nothing anywhere: what is left is the SDK's own cost."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _engine(bench: Bench) -> Engine:
    engine = create_engine(bench.db_url)
    if bench.backend == "sqlite":  # as post_overhead measures SQLite: WAL
        event.listen(engine, "connect", _wal)
    return orm.prepare_engine(engine)


def _post_times(bench: Bench) -> dict[str, float]:
    fresh_engine(bench).dispose()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Dropped()))
    # One pool for all (the same connections, SQLite's WAL checkpoints shared alike); each
    # stack on an engine of its own options, where a toolkit's hooks ride.
    pool = _engine(bench)
    toolkits = {
        "off": Toolkit(pool.execution_options(), Settings()),
        "off, again": Toolkit(pool.execution_options(), Settings()),
        "metrics and tracing on": Toolkit(
            pool.execution_options(),
            Settings(hooks=[Metrics(), Tracing(tracer_provider=provider)]),
        ),
    }
    try:
        with sessionmaker(toolkits["off"].engine)() as session:
            network = Network(name="bench", project_id="bench")
            session.add(network)
            session.commit()
            network_id = network.id
        candidates = {
            name: request(toolkit.wsgi(port_app(toolkit.sessions, network_id)))
            for name, toolkit in toolkits.items()
        }
        for call in candidates.values():  # warm up: pools, dialect caches
            for _ in range(20):
                call()
        rounds, per_round = (40, 3) if bench.quick else (400, 5)
        return interleaved(candidates, rounds=rounds, per_round=per_round)
    finally:
        provider.shutdown()
        for toolkit in toolkits.values():
            toolkit.close()
        orm.drop_all(pool)
        pool.dispose()


def _scrape_times(bench: Bench, rows: int) -> tuple[float, list[str]]:
    """Median milliseconds of an uncached scrape at ``rows`` task rows; the query's plan."""
    engine = _engine(bench)
    fill = _Fill(engine)
    fill.setup()
    fill.grow(rows)
    toolkit = Toolkit(engine, Settings(hooks=[Metrics()]))
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/metrics",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
    }

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        if not status.startswith("200"):
            raise RuntimeError(f"scrape: {status}")

    def scrape() -> None:
        drain(metrics_app(toolkit)(dict(environ), start_response))  # a fresh cache

    try:
        for _ in range(5):
            scrape()
        with _statements(engine) as seen:
            scrape()
        statement, parameters = next(s for s in seen if "tasktoolkit_tasks" in s[0])
        plan = _explain(engine, statement, parameters)
        samples = []
        for _ in range(30 if bench.quick else 100):
            began = time.perf_counter()
            scrape()
            samples.append(time.perf_counter() - began)
        return statistics.median(samples) * 1e3, plan
    finally:
        toolkit.close()
        orm.drop_all(engine)
        engine.dispose()


def run(bench: Bench) -> dict[str, float]:
    times = _post_times(bench)
    ratio = times["metrics and tracing on"] / times["off"]
    bench.table(
        "POST /ports (one port, four tasks): metrics and tracing on (SDK, dropping exporter) "
        "against off",
        [(name, seconds * 1e3, seconds / times["off"]) for name, seconds in times.items()],
        ["stack", "ms/request", "vs off"],
    )
    rows = 100_000 if bench.quick else 1_000_000
    scrape_ms, plan = _scrape_times(bench, rows)
    bench.table(
        "a scrape of /metrics (database gauges read afresh)",
        [(f"{rows:,} task rows, 1,000 active", scrape_ms)],
        ["tasks table", "ms/scrape"],
    )
    print("plan of its query:\n  " + "\n  ".join(plan))
    return {
        "metrics_post_off_ms": times["off"] * 1e3,
        "metrics_post_on_ms": times["metrics and tracing on"] * 1e3,
        "metrics_post_ratio": ratio,
        "metrics_post_noise_ratio": times["off, again"] / times["off"],
        "metrics_scrape_ms_1m": scrape_ms,
    }
