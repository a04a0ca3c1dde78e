"""Real brokers and real ``celery worker`` processes for the bridge tests.

Each test module runs once per broker (RabbitMQ, Redis) and database
(SQLite, PostgreSQL): a private broker space (:mod:`tests.brokers`), the
module's database, a Redis database of its own for Celery's results, and two
Celery workers of two processes each (``prefork``, sending task events): ``a``
consumes the default queue and ``host-a``, ``b`` the default queue only. The
test process publishes through a bridge of its own whose broker connection
goes through a :class:`~tests.proxy.TcpProxy`, so a test can take the broker
away from the API side only; it hears the workers' task events on the broker
itself (:class:`Events`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import kombu.pools
import pytest
from sqlalchemy.engine import URL, Engine

from tasktoolkit import Settings, Toolkit
from tasktoolkit.celery import CeleryBridge
from tasktoolkit.hooks import Event, Hook
from tests.brokers import BROKERS, private_broker
from tests.databases import engine_for
from tests.proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("quick", "hang", "polite", "flaky", "slow", "doomed", "brief")
#: The workers: name -> the queues it consumes besides the default one.
WORKERS = {"a": ["host-a"], "b": []}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The bridge is tested on SQLite and PostgreSQL."""
    return str(request.param)


@pytest.fixture(scope="module", params=BROKERS)
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A private broker space on RabbitMQ or Redis."""
    with private_broker(str(request.param)) as url:
        yield url


@pytest.fixture(scope="module")
def engine(backend: str, database_url: Callable[[str], URL]) -> Iterator[Engine]:
    """The module's database (SQLite in WAL mode: several processes share the file)."""
    from tasktoolkit import orm

    eng = engine_for(database_url(backend))
    orm.drop_all(eng)
    orm.create_all(eng)
    if backend == "sqlite":
        with eng.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    yield eng
    orm.drop_all(eng)
    eng.dispose()


@dataclass
class Workers:
    """The Celery worker processes of a module, and what their handlers recorded."""

    runs_file: Path
    logs: dict[str, Path]
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        """Start worker ``name`` (a process group of its own) and wait until it is ready."""
        queues = ",".join(["celery", *WORKERS[name]])
        ready = self.log(name).count("ready.")
        log = self.logs[name].open("ab")
        self.processes[name] = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "tests.celery.worker_app", "worker",
                "-P", "prefork", "-c", "2", "-Q", queues, "-n", f"{name}@%h", "-E",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
            ],
            cwd=ROOT,
            env={**self.env, "TT_WORKER_NAME": name},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_for(
            lambda: self.log(name).count("ready.") > ready, f"worker {name} ready", seconds=60
        )

    def deliveries(self, task_id: str) -> list[str]:
        """What the workers' ``around_delivery`` hook saw of task ``task_id``, in order."""
        path = Path(self.env["TT_DELIVERIES"])
        lines = path.read_text().splitlines() if path.exists() else []
        return [line.split()[1] for line in lines if line.split()[0] == task_id]

    def kill(self, name: str) -> None:
        """``kill -9`` worker ``name`` whole: its main process and its pool processes."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def log(self, name: str | None = None) -> str:
        """What worker ``name`` (default: every worker) logged so far."""
        names = [name] if name else list(self.logs)
        return "".join(
            self.logs[n].read_text(errors="replace") for n in names if self.logs[n].exists()
        )

    def runs(self, task_id: str | None = None) -> list[tuple[str, int, str, str, int]]:
        """``(task id, attempt, event, worker, pid)`` of every line recorded (of one task)."""
        if not self.runs_file.exists():
            return []
        lines = [line.split() for line in self.runs_file.read_text().splitlines() if line]
        found = [(t, int(n), e, w, int(p)) for t, n, e, w, p in lines]
        return [r for r in found if task_id is None or r[0] == task_id]

    def stop(self) -> None:
        """Stop every worker (a cold shutdown)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGQUIT)  # cold shutdown: no waiting for tasks
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def wait_for(check: Callable[[], object], what: str, *, seconds: float = 30.0) -> None:
    """Poll ``check`` until it is true, or fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    pause = 0.02
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


@pytest.fixture(scope="module")
def results_url() -> Iterator[str]:
    """A Redis database of the module's own for Celery's result backend."""
    with private_broker("redis") as url:
        yield url


@pytest.fixture(scope="module")
def idle_workers(
    broker_url: str, results_url: str, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    """The module's Celery workers, none started yet; stopped after the module."""
    tmp = tmp_path_factory.mktemp("celery")
    env = {
        **os.environ,
        "TT_BROKER_URL": broker_url,
        "TT_RESULT_URL": results_url,
        "TT_DB_URL": engine.url.render_as_string(hide_password=False),
        "TT_RUNS": str(tmp / "runs.txt"),
        "TT_DELIVERIES": str(tmp / "deliveries.txt"),
        "PYTHONPATH": str(ROOT),
    }
    handle = Workers(tmp / "runs.txt", {n: tmp / f"worker-{n}.log" for n in WORKERS}, env)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def workers(idle_workers: Workers) -> Workers:
    """Two Celery workers (``a`` and ``b``), two processes each, for the module."""
    for name in WORKERS:
        idle_workers.start(name)
    return idle_workers


class Events:
    """Celery's task events, as ``celery events`` and Flower hear them, in a thread."""

    def __init__(self, broker_url: str) -> None:
        from celery import Celery

        self.app = Celery("tasktoolkit-events", broker=broker_url, set_as_current=False)
        self.seen: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._listen, name="celery-events", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the event receiver did not start")

    def _listen(self) -> None:
        with self.app.connection_for_read() as connection:
            receiver = self.app.events.Receiver(connection, handlers={"*": self.seen.append})
            receiver.on_consume_ready = lambda *args, **kwargs: self._ready.set()
            self._receiver = receiver
            receiver.capture(limit=None, timeout=None, wakeup=False)  # until should_stop

    def of(self, task_id: str) -> list[str]:
        """The kinds of the events of task ``task_id`` heard so far, in order."""
        return [e["type"] for e in list(self.seen) if e.get("uuid") == task_id]

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(10)
        self.app.close()


@pytest.fixture(scope="module")
def events(broker_url: str) -> Iterator[Events]:
    """The workers' task events, heard from before the workers start."""
    heard = Events(broker_url)
    yield heard
    heard.close()


@pytest.fixture(scope="module")
def proxy(broker_url: str) -> Iterator[TcpProxy]:
    """A proxy to the broker, for the test process's bridge."""
    parts = urlsplit(broker_url)
    tcp = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 0)
    yield tcp
    tcp.close()


class Counting(Hook):
    """Counts what a bridge announces: tasks published after commit, and swept."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def happened(self, event: Event) -> None:
        if event.reason == "celery":
            self.counts[event.kind] += event.count


@pytest.fixture(scope="module")
def counting() -> Counting:
    return Counting()


@pytest.fixture(scope="module")
def toolkit(engine: Engine, counting: Counting) -> Toolkit:
    """The API side's toolkit on the module's engine: its sweeper publishes at once, and
    what its bridge announces is counted."""
    return Toolkit(engine, Settings(sweep_after=0, hooks=[counting]))


@pytest.fixture(scope="module")
def bridge(
    broker_url: str, results_url: str, toolkit: Toolkit, proxy: TcpProxy, idle_workers: Workers
) -> Iterator[CeleryBridge]:
    """The API side's bridge on the module's toolkit, through the proxy; it publishes
    the test names, whose handlers live in the workers only, and reads Celery's results."""
    parts = urlsplit(broker_url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    through = urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))
    made = CeleryBridge(toolkit, through, names=NAMES)
    made.app.conf.broker_connection_timeout = 2
    made.app.conf.result_backend = results_url
    yield made
    made.close()
    kombu.pools.reset()  # the process's producer connections, closed
