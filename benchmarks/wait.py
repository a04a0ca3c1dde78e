"""Waiting requests: 200 ``Prefer: wait`` GETs held by one gunicorn process with threads.

One gunicorn worker (``gthread``, 256 threads) serves the endpoints. 200
clients each ``GET /operations/<id>?`` with ``Prefer: wait=120`` on an
operation of their own whose one task is pending. While they all wait, the
statements the server sends to the database are counted for a few seconds
(``statements_per_s_200_waiting``). Then the tasks are finished one by one (a
transaction each, 20 ms apart) and the delay from each commit to its
client's answer is measured (``wake_delay_p50_ms``, ``wake_delay_p99_ms``).

On PostgreSQL the waiters are woken by ``NOTIFY`` through one ``LISTEN``
connection; elsewhere they poll with backoff (50 ms doubling to 1 s), so the
statements per second there are about 2 per waiter per second once backed off
(an operation's read is two statements).

Warning: drops and re-creates the toolkit's and the sample's tables in the
database at ``--db-url``.
"""

from __future__ import annotations

import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from benchmarks._harness import Bench
from sample_app.models import Network, Port
from tasktoolkit import context, orm
from tasktoolkit.orm._operations import OperationFields, end_request, open_operation
from tasktoolkit.orm._transitions import start_task, succeed_task

NAME = "wait"
WAITERS = 200
ADMIN = {"X-Roles": "admin", "X-Project-Id": "bench"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed(session: Session, count: int) -> list[tuple[str, str]]:
    """``count`` operations whose request ended (202), each with one pending task."""
    network = Network(id=str(uuid.uuid4()), name="n", project_id="bench")
    session.add(network)
    session.flush()
    made = []
    for _ in range(count):
        rid = context.new_request_id()
        open_operation(
            session.connection(),
            OperationFields(id=rid, method="POST", path="/ports", project_id="bench"),
        )
        port = Port(network_id=network.id, name="p", project_id="bench")
        session.add(port)
        session.flush()
        with context.request_context(context.RequestContext(rid, operation_id=rid)):
            (task,) = port.spawn_tasks(["l2_wiring"])
        end_request(session.connection(), rid, 202)
        made.append((rid, task.id))
    session.commit()
    return made


def _serve(db_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TASKTOOLKIT_BENCH_DB_URL": db_url}
    root = Path(__file__).resolve().parents[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "1",
            "-k",
            "gthread",
            "--threads",
            "256",
            "--timeout",
            "300",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "benchmarks._wait_app:app",
        ],
        cwd=root,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _statements(port)
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("gunicorn did not start")


def _statements(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/_statements")
        return int(connection.getresponse().read())
    finally:
        connection.close()


def _wait(port: int, rid: str, answers: dict[str, float], states: dict[str, str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request("GET", f"/operations/{rid}", headers={**ADMIN, "Prefer": "wait=120"})
        response = connection.getresponse()
        body = response.read()
        answers[rid] = time.monotonic()
        states[rid] = '"state":"succeeded"' if b'"state":"succeeded"' in body else "other"
    finally:
        connection.close()


def run(bench: Bench) -> dict[str, float]:
    engine = orm.prepare_engine(create_engine(bench.db_url))
    orm.drop_all(engine)
    orm.create_all(engine)
    with Session(engine, expire_on_commit=False) as session:
        seeded = _seed(session, WAITERS)
    port = _free_port()
    server = _serve(bench.db_url, port)
    answers: dict[str, float] = {}
    states: dict[str, str] = {}
    committed: dict[str, float] = {}
    try:
        clients = [
            threading.Thread(target=_wait, args=(port, rid, answers, states), daemon=True)
            for rid, _ in seeded
        ]
        for client in clients:
            client.start()
        time.sleep(3)  # every client is in its wait (polling waiters have backed off)
        window = 3.0 if bench.quick else 10.0
        before, start = _statements(port), time.monotonic()
        time.sleep(window)
        per_second = (_statements(port) - before) / (time.monotonic() - start)
        waiting = WAITERS - len(answers)
        for rid, task_id in seeded:
            with Session(engine) as session:
                start_task(session, task_id, host="bench")
                succeed_task(session, task_id)
                session.commit()
            committed[rid] = time.monotonic()
            time.sleep(0.02)
        for client in clients:
            client.join(timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=30)
        engine.dispose()
    delays = sorted((answers[rid] - committed[rid]) * 1e3 for rid in committed if rid in answers)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    figures = {
        "statements_per_s_200_waiting": per_second,
        "wake_delay_p50_ms": statistics.median(delays),
        "wake_delay_p99_ms": p99,
    }
    bench.table(
        f"{WAITERS} waiting requests on one gunicorn process (gthread, 256 threads)",
        [
            ["requests waiting while counted", waiting],
            ["database statements per second while they wait", per_second],
            ["commit -> answer, p50 (ms)", figures["wake_delay_p50_ms"]],
            ["commit -> answer, p99 (ms)", p99],
            ["answered succeeded", sum(s != "other" for s in states.values())],
        ],
        ["", "value"],
    )
    return figures
