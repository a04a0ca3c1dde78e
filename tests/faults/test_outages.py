"""The sample app under gunicorn while its database is stopped, killed and frozen.

Each run starts a PostgreSQL or MariaDB server of its own (never the shared
test servers), serves the sample app with gunicorn (2 workers x 4 threads)
over it, and keeps a bounded load on it (4 clients, each one request at a
time: creates, reads, lists) while the database is

1. stopped cleanly, then started again,
2. killed with ``kill -9``, then started again (crash recovery),
3. frozen with ``SIGSTOP`` (it accepts connections and answers nothing), then
   resumed with ``SIGCONT``.

It prints the figures and asserts: no 5xx but 503, every 503 carries
``Retry-After`` and the request id; no answer later than the deadline plus
one second; every response carries its request id; no created row lost or
duplicated; no operation left ``running`` after one reaper pass.
docs/reliability.md gives the figures and how to run it alone::

    python -m pytest tests/faults -s
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from sample_app.engine import create_sample_engine
from sample_app.models import Network
from tasktoolkit import Settings
from tasktoolkit.context import is_valid_request_id
from tasktoolkit.orm import Operation, Worker, purge, reap
from tasktoolkit.settings import DEFAULT_DEADLINE
from tests.databases import in_ci
from tests.faults.servers import PrivateServer, free_port, private_server, wait_until

ROOT = Path(__file__).resolve().parents[2]
#: Clients, each with one request in flight: fewer than one worker's threads, so that
#: no request waits for a thread (a request whose database froze holds its thread
#: for up to one more deadline after its answer, writing its operation's end).
CLIENTS = 4
#: The longest a client waits for an answer; longer counts as a hang.
CLIENT_TIMEOUT = 20.0
#: Seconds each fault lasts (a freeze lasts long enough for the deadline to pass twice).
OUTAGE = 3.0
FREEZE = 2 * DEFAULT_DEADLINE + 1


def _binaries(backend: str) -> str | None:
    """Why ``backend`` cannot be run privately here, or ``None``."""
    if backend == "postgresql":
        if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
            return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root without runuser (PostgreSQL refuses to run as root)"
        return None
    if shutil.which("mariadbd") is None or shutil.which("mariadb-install-db") is None:
        return "no mariadbd / mariadb-install-db on PATH"
    return None


@pytest.fixture(scope="module", params=["postgresql", "mariadb"])
def database(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    """A private server of ``request.param`` with the sample's schema."""
    backend = request.param
    missing = _binaries(backend)
    if missing is not None:
        if in_ci():
            pytest.fail(f"{backend}: {missing} (CI=true: the fault suite must run)")
        pytest.skip(f"{backend}: {missing}")
    server = private_server(backend)
    try:
        create_sample_engine(server.url, create=True).dispose()
        yield server
    finally:
        server.close()


@dataclass
class Answer:
    """One request as the client saw it."""

    method: str
    path: str
    started: float
    seconds: float
    status: int | None
    headers: dict[str, str]
    body: bytes
    name: str | None = None  # the network a POST created, by its unique name


@dataclass
class Gunicorn:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def request(self, method: str, path: str, body: object = None) -> Answer:
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            content = response.read()
            status: int | None = response.status
            found = {k.lower(): v for k, v in response.getheaders()}
        except OSError as exc:  # refused, reset, timed out: a hang or a dead server
            status, found, content = None, {}, repr(exc).encode()
        finally:
            connection.close()
        return Answer(method, path, started, time.monotonic() - started, status, found, content)


@pytest.fixture(scope="module")
def gunicorn(
    database: PrivateServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """The sample app (its paste pipeline) under gunicorn, 2 workers x 4 threads."""
    tmp = tmp_path_factory.mktemp("gunicorn")
    paste = (ROOT / "sample_app" / "api-paste.ini").read_text()
    paste = paste.replace(
        "paste.app_factory = sample_app.wsgi:app_factory",
        "paste.app_factory = sample_app.wsgi:app_factory\ncreate_tables = false",
    )
    ini = tmp / "api-paste.ini"
    ini.write_text(paste)
    port = free_port()
    log = tmp / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--paste",
                str(ini),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--worker-class",
                "gthread",
                "--timeout",
                "60",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SAMPLE_APP_DB_URL": str(database.url)},
        )
    server = Gunicorn(port, process, log)
    try:
        wait_until(lambda: server.request("GET", "/networks").status == 200, 60, "gunicorn")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Load:
    """Clients sending one request at a time each, until stopped."""

    app: Gunicorn
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for number in range(CLIENTS):
            thread = threading.Thread(target=self._client, args=(number,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _client(self, number: int) -> None:
        known: list[str] = []
        turn = 0
        while not self.stop.is_set():
            turn += 1
            if turn % 3 == 1:
                name = f"c{number}-{uuid.uuid4().hex[:12]}"
                answer = self.app.request("POST", "/networks", {"network": {"name": name}})
                answer.name = name
                if answer.status == 201:
                    known.append(json.loads(answer.body)["network"]["id"])
            elif turn % 3 == 2 and known:
                answer = self.app.request("GET", f"/networks/{known[-1]}")
            else:
                answer = self.app.request("GET", "/operations?limit=5")
            with self.lock:
                self.answers.append(answer)
            self.stop.wait(0.02)

    def finish(self) -> list[Answer]:
        self.stop.set()
        for thread in self.threads:
            thread.join(CLIENT_TIMEOUT + 5)
        return self.answers


def _recovery(app: Gunicorn, since: float) -> float:
    """Seconds from ``since`` until a write succeeds again."""

    def written() -> bool:
        return app.request("POST", "/networks", {"network": {"name": "probe"}}).status == 201

    wait_until(written, 60, "the first successful write after the outage")
    return time.monotonic() - since


def test_outages_cost_503s_within_the_deadline_and_nothing_else(
    database: PrivateServer, gunicorn: Gunicorn
) -> None:
    load = Load(gunicorn)
    load.start()
    began = time.monotonic()
    recover: dict[str, float] = {}
    phases: list[str] = []

    def outage(
        name: str, fault: Callable[[], None], repair: Callable[[], None], last: float
    ) -> None:
        time.sleep(2)  # traffic before
        phases.append(f"{name} at {time.monotonic() - began:.1f} s")
        fault()
        time.sleep(last)
        phases.append(f"repaired at {time.monotonic() - began:.1f} s")
        repair()
        recover[name] = _recovery(gunicorn, time.monotonic())

    try:
        outage("stop", database.stop, database.start, OUTAGE)
        outage("kill -9", database.kill, database.start, OUTAGE)
        outage("SIGSTOP", database.freeze, database.thaw, FREEZE)
        time.sleep(2)  # traffic after
    finally:
        answers = load.finish()
        database.thaw()

    engine = create_sample_engine(database.url)
    try:
        # One reaper pass bounding every request to a second (as if their timeout,
        # 10 minutes, had passed): operations whose end could not be written (the
        # database was down when their body closed) are the reaper's to end.
        reap(engine, request_timeout=timedelta(seconds=1))
        with engine.connect() as conn:
            names = dict(
                conn.execute(select(Network.name, func.count()).group_by(Network.name)).all()
            )
            running, ended = conn.execute(
                select(func.count(), func.count(Operation.http_status)).where(
                    Operation.state == "running"
                )
            ).one()
    finally:
        engine.dispose()

    statuses: dict[str, int] = {}
    for answer in answers:
        key = str(answer.status) if answer.status is not None else "no answer"
        statuses[key] = statuses.get(key, 0) + 1
    created = [a.name for a in answers if a.status == 201]
    lost = [name for name in created if names.get(name, 0) == 0]
    duplicated = [name for name, count in names.items() if count > 1 and name != "probe"]
    longest = max(answers, key=lambda a: a.seconds)
    server_errors = [
        a for a in answers if a.status is None or (a.status >= 500 and a.status != 503)
    ]
    unavailable = [a for a in answers if a.status == 503]
    where = f"{longest.method} {longest.path} -> {longest.status}"
    print(
        f"\n[faults] {database.backend}: {len(answers)} requests, "
        f"statuses {dict(sorted(statuses.items()))}, "
        f"503s {len(unavailable)}, 500s {len(server_errors)}, "
        f"longest answer {longest.seconds:.2f} s ({where}), "
        f"time to recover {', '.join(f'{k} {v:.2f} s' for k, v in recover.items())}, "
        f"rows created {len(created)}, lost {len(lost)}, duplicated {len(duplicated)}, "
        f"operations running after one reaper pass {running} (end recorded: {ended})"
    )

    slowest = sorted(answers, key=lambda a: -a.seconds)[:5]
    print(
        "[faults] phases: "
        + ", ".join(phases)
        + "; slowest: "
        + ", ".join(
            f"{a.method} {a.path} {a.status} at {a.started - began:.1f} s took {a.seconds:.2f} s"
            for a in slowest
        )
    )
    assert server_errors == [], [
        (a.method, a.path, a.status, a.body[:200]) for a in server_errors[:5]
    ]
    assert unavailable, "no request met the outages: the faults did not happen"
    for answer in answers:
        assert is_valid_request_id(answer.headers.get("x-request-id")), answer
    for answer in unavailable:
        assert answer.headers.get("retry-after"), answer
        error = json.loads(answer.body)["errors"][0]
        assert error["request_id"] == answer.headers["x-request-id"]
        assert error["code"] == "tasktoolkit.database_unavailable"
    assert longest.seconds <= DEFAULT_DEADLINE + 1, longest
    assert lost == [] and duplicated == []
    # Nothing stays active for ever: no operation is left running after the
    # reaper, whether its end was recorded or lost with the database.
    assert (running, ended) == (0, 0), f"{running} operations still running ({ended} ended)"


#: The knobs of the workers, the reaper and purge below: give up after a second.
GIVE_UP = Settings(deadline=1)


@pytest.mark.parametrize(
    "work",
    [
        pytest.param(
            lambda engine: Worker(engine, ["boot"], settings=GIVE_UP).claim(), id="worker-claim"
        ),
        pytest.param(lambda engine: reap(engine, settings=GIVE_UP), id="reaper"),
        pytest.param(lambda engine: purge(engine, settings=GIVE_UP), id="purge"),
    ],
)
def test_workers_the_reaper_and_purge_give_up_on_a_frozen_database_and_work_after(
    database: PrivateServer, work: Callable[[Engine], object]
) -> None:
    engine = create_sample_engine(database.url)
    try:
        work(engine)  # a pooled connection, as a long-running worker has
        database.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(OperationalError):
                work(engine)
            took = time.monotonic() - started
        finally:
            database.thaw()
        # one attempt, then once more on a fresh connection: two deadlines at most
        assert took <= 2 * 1 + 1, took
        work(engine)  # and it works again, without a restart
    finally:
        engine.dispose()
