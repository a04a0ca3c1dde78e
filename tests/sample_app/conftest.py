"""Fixtures for the sample app: a real server on 127.0.0.1, a plain HTTP client, polling.

The server is ``python -m sample_app serve --port 0`` in a subprocess, on this
run's private database of each backend, with a fresh schema per test module.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import webtest
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session, sessionmaker

from sample_app import models  # noqa: F401  (declares the resource types network, port)
from sample_app._client import Client, Reply
from sample_app.app import make_app
from tasktoolkit import orm
from tests.databases import engine_for
from tests.middleware.stacks import FlushingTestApp, operations_of

ROOT = Path(__file__).resolve().parents[2]
#: How long anything a test waits for may take before the test fails.
DEADLINE = 30.0
#: The agents' task delay in these tests: short, but every task still reports progress.
TASK_DELAY = "0.01"

T = TypeVar("T")


class Http(Client):
    """The sample's own client, sending through plain ``http.client`` (so a test can send
    raw bytes) and strict about JSON: a body that is not JSON fails the test."""

    def __init__(self, base_url: str, project: str | None = None, roles: str | None = None):
        super().__init__(base_url, project=project, roles=roles)
        self.project, self.roles = project, roles

    def as_project(self, project: str, roles: str | None = None) -> Http:
        return Http(self.base_url, project, roles)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = DEADLINE,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        parts = urlsplit(path if path.startswith("http") else self.base_url + path)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        headers = {**self.headers, **(headers or {})}
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request(method, target, body=data, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            return Reply(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                json.loads(payload) if payload else None,
            )
        finally:
            connection.close()


def wait_for(probe: Callable[[], T], until: Callable[[T], bool], what: str) -> T:
    """Call ``probe`` until ``until(value)``; fail after :data:`DEADLINE` with the last value."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached in {DEADLINE:.0f} s; last: {value!r}")
        time.sleep(0.02)


@dataclass
class ServerProcess:
    """A running ``python -m sample_app ...`` subprocess and what it printed."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    stderr_path: Path
    pump: threading.Thread

    def first_line(self, what: str) -> str:
        try:
            return self.lines.get(timeout=DEADLINE)
        except queue.Empty:
            self.stop()
            pytest.fail(f"{what} printed nothing in {DEADLINE:.0f} s: {self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.pump.join(timeout=DEADLINE)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def start_process(
    args: list[str], stderr_path: Path, *, env: Mapping[str, str] | None = None
) -> ServerProcess:
    """Start ``args`` with stdout read line by line in a thread (``env``: more variables)."""
    stderr_file = stderr_path.open("w")
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    stderr_file.close()
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return ServerProcess(process, lines, stderr_path, thread)


@pytest.fixture(scope="module")
def sample_db(backend: str, database_url: Callable[[str], URL]) -> Iterator[URL]:
    """This module's database on ``backend``, with a fresh schema (toolkit and sample tables)."""
    engine = engine_for(database_url(backend))
    orm.drop_all(engine)
    orm.create_all(engine)
    engine.dispose()
    yield database_url(backend)
    engine = engine_for(database_url(backend))
    orm.drop_all(engine)
    engine.dispose()


@contextmanager
def serving(sample_db: URL, log: Path, *options: str) -> Iterator[Http]:
    """``python -m sample_app serve --port 0 options...`` on ``sample_db``; a client for it.

    Stopped with SIGTERM at the end, which must exit 0.
    """
    url = sample_db.render_as_string(hide_password=False)
    running = start_process(
        [sys.executable, "-m", "sample_app", "serve", "--port", "0", "--db-url", url, *options],
        log,
    )
    line = running.first_line("sample_app serve")
    if not line.startswith("Serving on http://127.0.0.1:"):
        running.stop()
        pytest.fail(f"unexpected first line {line!r}: {running.stderr()}")
    yield Http(line.split()[2].rstrip("/"))
    status = running.stop()
    assert status == 0, running.stderr()


@pytest.fixture(scope="module")
def server(sample_db: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    """``python -m sample_app serve --port 0`` on ``sample_db``, two agents; a client for it."""
    log = tmp_path_factory.mktemp("serve") / "stderr.log"
    with serving(sample_db, log, "--task-delay", TASK_DELAY, "--agents", "2") as http:
        yield http


@pytest.fixture
def api(engine: Engine, session_factory: sessionmaker[Session]) -> Iterator[webtest.TestApp]:
    """The whole stack (middlewares, the sample's routes, the toolkit's endpoints) in WebTest.

    No agents run: tasks stay where the test puts them. Rows go after the test.
    """
    stack = make_app(engine)
    yield FlushingTestApp(stack, lint=True)  # each request's end written before it returns
    operations_of(stack).close()  # its own pool
