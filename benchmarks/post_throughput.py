"""Throughput through a real server: ``POST /ports`` under gunicorn, bare and with the toolkit.

Two gunicorn servers run at once, each ``gthread`` with 2 workers of 4 threads,
serving the app of ``post_overhead`` (one port with its four tasks per POST,
in one transaction): one bare, one behind ``RequestIdMiddleware`` +
``OperationMiddleware``, whose ends are written by each worker's end writer.
Concurrent clients (threads, each one keep-alive ``http.client`` connection,
more clients than the server has threads: saturation) send POSTs for a
phase of a few seconds to one server, then to the other, in turns (A, B,
B, A, ...), so that the shared machine's drift touches both alike.

Figures: ``post_throughput_bare_rps`` and ``post_throughput_toolkit_rps``
(requests per second, the median of the phases), ``post_throughput_ratio_gunicorn``
(toolkit / bare; bar: >= 0.85 on PostgreSQL and SQLite), the 99th percentile of
each stack's latency over all its requests (``post_throughput_*_p99_ms``), and
``post_throughput_end_lag_p99_ms``: the end writers' lag, from a request's close to
its end's commit, at saturation (written by each worker when it exits, after the
servers are stopped with every end flushed). ``post_throughput_*_worker_cpu_ms``: the
CPU the gunicorn workers spent per request (from ``/proc``: where the
difference goes when the machine's cores, not the database, are the limit).
``post_throughput_load_avg``: the machine's load average (1 minute) over the
run, for the figures' context.

Warning: drops and re-creates the toolkit's and the sample's tables in the
database at ``--db-url``.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from benchmarks._harness import Bench, fresh_engine, load_average, percentile
from benchmarks.wait import _free_port
from sample_app.models import Network
from tasktoolkit import orm
from tasktoolkit.orm._records import operations_table

NAME = "post_throughput"
STACKS = ("bare", "toolkit")
WORKERS, THREADS = 2, 4
#: Concurrent clients: more than the server's 8 threads, so that it is never idle.
CLIENTS = 16


@dataclass
class Phase:
    """What one phase of load on one server measured."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    #: CPU seconds the server's workers spent in the phase.
    cpu: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds


def _serve(
    bench: Bench, stack: str, network: str, lags: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {
        **os.environ,
        "TASKTOOLKIT_BENCH_DB_URL": bench.db_url,
        "TASKTOOLKIT_BENCH_STACK": stack,
        "TASKTOOLKIT_BENCH_NETWORK": network,
        "TASKTOOLKIT_BENCH_LAGS": str(lags),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            *("-c", "python:benchmarks._throughput_gunicorn"),
            *("-w", str(WORKERS), "-k", "gthread", "--threads", str(THREADS)),
            *("--keep-alive", "30", "-b", f"127.0.0.1:{port}", "--log-level", "warning"),
            "benchmarks._throughput_app:app",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _post(http.client.HTTPConnection("127.0.0.1", port, timeout=10))
            return server, port
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"gunicorn ({stack}) did not start")


def _post(connection: http.client.HTTPConnection) -> None:
    connection.request("POST", "/ports", body=b"", headers={"X-Project-Id": "bench"})
    response = connection.getresponse()
    response.read()
    if response.status != 201:
        raise RuntimeError(f"POST /ports answered {response.status}")


def load(port: int, seconds: float, clients: int = CLIENTS) -> Phase:
    """``clients`` keep-alive clients POSTing to ``port`` for ``seconds``: every latency."""
    phase = Phase(seconds)
    lock = threading.Lock()
    go = threading.Barrier(clients + 1)
    until: list[float] = [0.0]

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        errors = 0
        go.wait()
        try:
            while (started := time.perf_counter()) < until[0]:
                try:
                    _post(connection)
                except (OSError, http.client.HTTPException, RuntimeError):
                    errors += 1
                    connection.close()
                    continue
                mine.append(time.perf_counter() - started)
        finally:
            connection.close()
            with lock:
                phase.latencies.extend(mine)
                phase.errors += errors

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    until[0] = time.perf_counter() + seconds
    go.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    phase.seconds = time.perf_counter() - began
    return phase


def workers_cpu_seconds(server: int) -> float:
    """CPU seconds (user and system) so far of the processes whose parent is ``server``
    (gunicorn's workers), read from ``/proc``; ``nan`` where there is none."""
    total, found = 0.0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == server:  # ppid, the 4th field of the line
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            found = True
    return total if found else float("nan")


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()  # gunicorn's graceful stop: its workers exit (worker_exit flushes)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def run(bench: Bench) -> dict[str, float]:
    engine = fresh_engine(bench)
    with Session(engine, expire_on_commit=False) as session:
        network = Network(name="bench", project_id="bench")
        session.add(network)
        session.commit()
        network_id = network.id
    rounds = 3 if bench.quick else 8
    seconds = 2.0 if bench.quick else 5.0
    phases: dict[str, list[Phase]] = {stack: [] for stack in STACKS}
    loads = [load_average()]
    with tempfile.TemporaryDirectory() as tmp:
        lags_dir = Path(tmp)
        servers = {stack: _serve(bench, stack, network_id, lags_dir) for stack in STACKS}
        try:
            for _, port in servers.values():  # warm up: pools, caches, the end writers
                load(port, 1.0)
            for r in range(rounds):
                for stack in STACKS if r % 2 == 0 else STACKS[::-1]:
                    server, port = servers[stack]
                    cpu_before = workers_cpu_seconds(server.pid)
                    phase = load(port, seconds)
                    phase.cpu = workers_cpu_seconds(server.pid) - cpu_before
                    phases[stack].append(phase)
                loads.append(load_average())
        finally:
            for server, _ in servers.values():
                _stop(server)
        lags = [lag for path in lags_dir.glob("*.json") for lag in json.loads(path.read_text())]
    with engine.connect() as conn:
        unended = conn.execute(
            select(func.count())
            .select_from(operations_table)
            .where(operations_table.c.http_status.is_(None))
        ).scalar_one()
    orm.drop_all(engine)
    engine.dispose()
    if unended:
        raise RuntimeError(f"{unended} operations have no end after the servers stopped")
    rps = {stack: statistics.median(p.rps for p in phases[stack]) for stack in STACKS}
    p99 = {
        stack: percentile([lat for p in phases[stack] for lat in p.latencies], 0.99)
        for stack in STACKS
    }
    errors = {stack: sum(p.errors for p in phases[stack]) for stack in STACKS}
    cpu = {
        stack: sum(p.cpu for p in phases[stack]) / sum(len(p.latencies) for p in phases[stack])
        for stack in STACKS
    }
    lag_p99 = percentile(lags, 0.99) if lags else float("nan")
    figures = {
        "post_throughput_bare_rps": rps["bare"],
        "post_throughput_toolkit_rps": rps["toolkit"],
        "post_throughput_ratio_gunicorn": rps["toolkit"] / rps["bare"],
        "post_throughput_bare_p99_ms": p99["bare"] * 1e3,
        "post_throughput_toolkit_p99_ms": p99["toolkit"] * 1e3,
        "post_throughput_end_lag_p99_ms": lag_p99 * 1e3,
        "post_throughput_bare_worker_cpu_ms": cpu["bare"] * 1e3,
        "post_throughput_toolkit_worker_cpu_ms": cpu["toolkit"] * 1e3,
        "post_throughput_load_avg": statistics.mean(loads),
    }
    bench.table(
        f"POST /ports under gunicorn (gthread, {WORKERS} workers x {THREADS} threads), "
        f"{CLIENTS} keep-alive clients, {rounds} phases of {seconds:.0f} s each, in turns",
        [
            (
                stack,
                rps[stack],
                ", ".join(f"{p.rps:.0f}" for p in phases[stack]),
                p99[stack] * 1e3,
                cpu[stack] * 1e3,
                errors[stack],
            )
            for stack in STACKS
        ]
        + [
            ("toolkit / bare", figures["post_throughput_ratio_gunicorn"], "", "", "", ""),
            (f"end lag p99 ms ({len(lags):,} ends)", lag_p99 * 1e3, "", "", "", ""),
            ("load average (1 min), mean", figures["post_throughput_load_avg"], "", "", "", ""),
        ],
        ["stack", "requests/s (median)", "each phase", "p99 ms", "worker CPU ms/req", "errors"],
    )
    return figures
