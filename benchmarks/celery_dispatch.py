"""Through Celery, a task's dispatch costs at most 2x the broker's own publish-to-start.

One real ``celery worker`` (prefork, one process) on a private broker space
(a RabbitMQ vhost, or a Redis database number: ``TASKTOOLKIT_BENCH_BROKER``
is ``rabbitmq`` (default) or ``redis``) runs, in turns (A, B, A, B, ...), one at
a time:

- **bridge**: a task spawned in a session on the bridge's engine; from just
  before the spawning commit (which publishes after it) to the start of its
  handler, the task started (a compare-and-set) and its job made;
- **bare**: a plain Celery task with the same settings (``acks_late``,
  prefetch 1), from just before ``apply_async`` to the start of its function.

Figures, per broker (``_rabbitmq`` or ``_redis``): ``celery_dispatch_bridge_p50_ms_*``,
``celery_dispatch_bare_p50_ms_*`` and ``celery_dispatch_ratio_*`` (bridge p50 / bare p50;
bar: <= 2).

Warning: drops and re-creates the toolkit's and the test models' tables at ``--db-url``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import kombu.pools
from sqlalchemy.orm import Session

from benchmarks._harness import Bench, fresh_engine
from tasktoolkit import Toolkit
from tasktoolkit.celery import CeleryBridge
from tests.brokers import private_broker
from tests.models import Cluster

NAME = "celery_dispatch"
#: The bridge's task name, and the bare Celery task's name.
BRIDGED, BARE = "dispatch_bench", "bench.bare"
_ROOT = Path(__file__).resolve().parents[1]


def _starts(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    return {k: float(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def _until(path: Path, marker: str, seconds: float = 30.0) -> float:
    deadline = time.monotonic() + seconds
    while (started := _starts(path).get(marker)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker} never started")
        time.sleep(0.001)
    return started


def run(bench: Bench) -> dict[str, float]:
    engine = fresh_engine(bench)
    broker = os.environ.get("TASKTOOLKIT_BENCH_BROKER", "rabbitmq")
    rounds = 30 if bench.quick else 200
    with private_broker(broker) as broker_url, tempfile.TemporaryDirectory() as tmp:
        starts = Path(tmp) / "starts.txt"
        env = {
            **os.environ,
            "TASKTOOLKIT_BENCH_DB_URL": engine.url.render_as_string(hide_password=False),
            "TASKTOOLKIT_BENCH_BROKER_URL": broker_url,
            "TASKTOOLKIT_BENCH_STARTS": str(starts),
            "PYTHONPATH": str(_ROOT),
        }
        log = Path(tmp) / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "benchmarks._celery_app", "worker",
                    "-P", "prefork", "-c", "1", "--without-gossip", "--without-mingle",
                    "--without-heartbeat", "-l", "warning",
                ],
                cwd=_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            bridge = CeleryBridge(Toolkit(engine), broker_url, names=[BRIDGED])
            with Session(engine, expire_on_commit=False) as session:
                cluster = Cluster(name="dispatch", project_id="p")
                session.add(cluster)
                session.commit()
            bridged, bare = [], []
            for n in range(rounds + 3):  # the first three warm both paths up
                with Session(engine, expire_on_commit=False) as session:
                    session.add(cluster)
                    (task,) = cluster.spawn_tasks([BRIDGED])
                    before = time.time()
                    session.commit()
                took_bridge = _until(starts, task.id) - before
                marker = str(uuid.uuid4())
                before = time.time()
                bridge.app.send_task(BARE, args=[marker])
                took_bare = _until(starts, marker) - before
                if n >= 3:
                    bridged.append(took_bridge * 1000)
                    bare.append(took_bare * 1000)
            bridge.close()
            kombu.pools.reset()
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    engine.dispose()
    ratio = statistics.median(bridged) / statistics.median(bare)
    bench.table(
        f"spawn-to-start through the bridge, beside a bare Celery task ({broker})",
        [
            ("bridge (spawn commit -> handler) p50 ms", statistics.median(bridged)),
            ("bare Celery (apply_async -> function) p50 ms", statistics.median(bare)),
            ("ratio, p50", ratio),
            ("rounds", rounds),
        ],
        ["what", "value"],
    )
    return {
        f"celery_dispatch_bridge_p50_ms_{broker}": statistics.median(bridged),
        f"celery_dispatch_bare_p50_ms_{broker}": statistics.median(bare),
        f"celery_dispatch_ratio_{broker}": ratio,
    }
