"""The middleware under gunicorn (the sample's paste pipeline), on SQLite, PostgreSQL and MariaDB.

Workers recycled by ``--max-requests`` under load lose no request end (each
worker's exit flushes its end writer), and a keyed request retried as soon as
its answer was read is replayed, never a 409.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL

from tasktoolkit.orm._records import operations_table
from tests.databases import engine_for
from tests.sample_app.conftest import Http, ServerProcess, sample_db, wait_for  # noqa: F401
from tests.sample_app.servers import gunicorn_url, start_gunicorn
from tests.sample_app.test_commands import PASTE_INI

CLIENTS = 4
POSTS = 120
RETRIES = 200


def _gunicorn(tmp_path: Path, db_url: URL, *options: str) -> tuple[ServerProcess, Http]:
    server = start_gunicorn(PASTE_INI, tmp_path, tmp_path / "gunicorn.log", *options, db_url=db_url)
    url = wait_for(
        lambda: gunicorn_url(server),
        lambda found: found != "" or server.process.poll() is not None,
        "gunicorn listening",
    )
    assert url, server.stderr()
    return server, Http(url, project="gp")


@pytest.fixture
def recycling(tmp_path: Path, sample_db: URL) -> Iterator[Http]:  # noqa: F811
    """gunicorn, 2 gthread workers x 2 threads, each recycled after about 15 requests."""
    server, client = _gunicorn(
        tmp_path,
        sample_db,
        *("--workers", "2", "--threads", "2", "--worker-class", "gthread"),
        *("--max-requests", "15", "--max-requests-jitter", "5"),
    )
    yield client
    assert server.stop() == 0, server.stderr()


def test_workers_recycled_under_load_lose_no_request_end(
    recycling: Http,
    sample_db: URL,  # noqa: F811
) -> None:
    network = wait_for(
        lambda: recycling.post("/networks", {"network": {"name": "n"}}),
        lambda reply: reply.status == 201,
        "a network",
    ).body["network"]["id"]

    def post(_: int) -> str:
        reply = recycling.post("/ports", {"port": {"network_id": network}})
        assert reply.status == 202, reply
        return str(reply.header("X-Request-Id"))

    with ThreadPoolExecutor(CLIENTS) as pool:
        ids = list(pool.map(post, range(POSTS)))
    engine = engine_for(sample_db)
    try:

        def unended() -> list[str]:
            with engine.connect() as conn:
                query = select(operations_table.c.id).where(
                    operations_table.c.id.in_(ids), operations_table.c.http_status.is_(None)
                )
                return list(conn.execute(query).scalars())

        assert wait_for(unended, lambda left: left == [], "every request's end") == []
    finally:
        engine.dispose()


def test_a_keyed_retry_sent_once_the_answer_is_read_is_replayed(
    tmp_path: Path,
    sample_db: URL,  # noqa: F811
) -> None:
    server, client = _gunicorn(
        tmp_path, sample_db, "--workers", "2", "--threads", "4", "--worker-class", "gthread"
    )
    try:
        outcomes = []
        for n in range(RETRIES):
            body = {"network": {"name": f"n{n}"}}
            key = {"Idempotency-Key": f"retry-{n}"}
            first = client.request("POST", "/networks", body, headers=key)
            assert first.status == 201, first
            again = client.request("POST", "/networks", body, headers=key)  # a fresh connection
            outcomes.append((again.status, again.header("Idempotent-Replayed")))
            assert again.body == first.body or again.status != 201
    finally:
        assert server.stop() == 0, server.stderr()
    assert outcomes == [(201, "true")] * RETRIES
    assert not re.search(r"Traceback", server.stderr())
