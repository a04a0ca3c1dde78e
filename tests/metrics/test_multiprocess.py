"""Under gunicorn with two worker processes, a scrape of either sums what both counted."""

from __future__ import annotations

import http.client
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tasktoolkit import orm
from tests.databases import engine_for
from tests.metrics.scrapes import parse, value
from tests.sample_app.conftest import ServerProcess, start_process, wait_for
from tests.sample_app.servers import gunicorn_url


@pytest.fixture
def database(database_url: Callable[[str], URL]) -> Iterator[str]:
    url = database_url("postgresql")
    engine = engine_for(url)
    orm.drop_all(engine)
    orm.create_all(engine)
    yield url.render_as_string(hide_password=False)
    orm.drop_all(engine)
    engine.dispose()


@pytest.fixture
def gunicorn(database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """gunicorn, two sync workers, multiprocess mode on; its URL."""
    counts = tmp_path / "prometheus"
    counts.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(counts))
    monkeypatch.setenv("METRICS_TEST_DB_URL", database)
    server: ServerProcess = start_process(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "--workers",
            "2",
            "--bind",
            "127.0.0.1:0",
            "tests.metrics.gunicorn_app:app",
        ],
        tmp_path / "gunicorn.log",
    )
    try:
        yield wait_for(lambda: gunicorn_url(server), bool, "gunicorn listening")
    finally:
        assert server.stop() == 0, server.stderr()


def _get(url: str, method: str, path: str) -> tuple[int, str]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_a_scrape_sums_both_workers(gunicorn: str) -> None:
    pids: list[str] = []

    def post(_: int) -> str:
        status, pid = _get(gunicorn, "POST", "/spawn")
        assert status == 200, pid
        return pid

    with ThreadPoolExecutor(8) as pool:
        # Until both processes have run tasks (a deadline fails the test).
        wait_for(
            lambda: pids.extend(pool.map(post, range(16))) or set(pids),
            lambda s: len(s) == 2,
            "both workers",
        )
    assert len(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])) >= 2
    for _ in range(4):  # whichever process answers the scrape
        status, text = _get(gunicorn, "GET", "/metrics")
        assert status == 200
        read = parse(text)
        finished = value(
            read,
            "tasktoolkit_task_finished_total",
            error_code="",
            name="count",
            outcome="succeeded",
        )
        assert finished == len(pids)
        assert value(read, "tasktoolkit_task_queue_seconds_count", name="count") == len(pids)
