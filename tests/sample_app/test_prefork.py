"""Pre-forking servers: the app loads (and touches the database) once, then workers fork.

``create_tables = true`` makes the app use a pooled connection while it loads,
in the server's master process; every worker inherits that pool. Under
gunicorn ``--preload`` and uWSGI without ``lazy-apps`` (their defaults for
sharing one loaded app), 400 mixed requests must all succeed.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.sample_app.conftest import ROOT, Http, ServerProcess, start_process, wait_for
from tests.sample_app.servers import gunicorn_url, sample_env, start_gunicorn
from tests.sample_app.test_commands import PASTE_INI

WORKERS = 4
CLIENTS = 8
REQUESTS = 400


def _paste_ini(tmp_path: Path) -> Path:
    """The shipped api-paste.ini, creating its tables when the app loads."""
    text = PASTE_INI.read_text()
    text, count = re.subn(r"(?m)^(paste\.app_factory = .*)$", r"\1\ncreate_tables = true", text)
    assert count == 1
    path = tmp_path / "api-paste.ini"
    path.write_text(text)
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _gunicorn(ini: Path, tmp_path: Path, db_url: URL) -> tuple[ServerProcess, Callable[[], str]]:
    server = start_gunicorn(
        ini,
        tmp_path,
        tmp_path / "server.log",
        "--preload",
        "--workers",
        str(WORKERS),
        db_url=db_url,
    )
    return server, lambda: gunicorn_url(server)


def _uwsgi(ini: Path, tmp_path: Path, db_url: URL) -> tuple[ServerProcess, Callable[[], str]]:
    port = _free_port()
    server = start_process(
        [
            str(Path(sys.executable).with_name("uwsgi")),
            "--http-socket",
            f"127.0.0.1:{port}",
            "--master",
            "--processes",
            str(WORKERS),
            "--paste",
            f"config:{ini}",
            "--pythonpath",
            str(ROOT),
            "--need-app",
            "--die-on-term",
            "--disable-logging",
        ],
        tmp_path / "server.log",
        env=sample_env(db_url),
    )

    def url() -> str:
        return (
            f"http://127.0.0.1:{port}"
            if server.stderr().count("spawned uWSGI worker") >= WORKERS
            else ""
        )

    return server, url


SERVERS = [
    pytest.param(_gunicorn, id="gunicorn-preload"),
    pytest.param(_uwsgi, id="uwsgi-prefork"),
]


def _traffic(client: Http, count: int, outcomes: Counter[str]) -> None:
    """``count`` requests of every kind the API has, in one project; outcomes counted."""

    def send(method: str, path: str, body: object = None, expected: int = 200) -> dict:
        try:
            reply = client.request(method, path, body)
        except Exception as exc:  # a hang (timeout) or a dropped connection
            outcomes[f"{method} {type(exc).__name__}"] += 1
            return {}
        outcomes["ok" if reply.status == expected else f"{method} {reply.status}"] += 1
        return reply.body if reply.status == expected and isinstance(reply.body, dict) else {}

    sent = 1
    network = send("POST", "/networks", {"network": {"name": "n"}}, 201).get("network", {})
    port_id = None
    while sent < count:
        step = sent % 5
        if step == 0 or port_id is None:
            port = send("POST", "/ports", {"port": {"network_id": network.get("id")}}, 202)
            port_id = port.get("port", {}).get("id", "x")
        elif step == 1:
            send("GET", f"/ports/{port_id}/tasks")
        elif step == 2:
            send("GET", "/tasks?state=active&limit=5")
        elif step == 3:
            send("GET", "/operations?limit=5")
        else:
            send("GET", "/networks")
        sent += 1


@pytest.mark.parametrize("start", SERVERS)
def test_a_prefork_server_serves_every_request(
    start: Callable[[Path, Path, URL], tuple[ServerProcess, Callable[[], str]]],
    sample_db: URL,
    tmp_path: Path,
) -> None:
    server, url = start(_paste_ini(tmp_path), tmp_path, sample_db)
    try:
        base = wait_for(
            url, lambda found: bool(found) or server.process.poll() is not None, "server up"
        )
        assert base, server.stderr()
        outcomes: Counter[str] = Counter()
        clients = [
            threading.Thread(
                target=_traffic,
                args=(
                    Http(base, project=f"p-{uuid.uuid4().hex[:8]}"),
                    REQUESTS // CLIENTS,
                    outcomes,
                ),
            )
            for _ in range(CLIENTS)
        ]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        assert sum(outcomes.values()) == REQUESTS
        assert outcomes == Counter(ok=REQUESTS), server.stderr()
    finally:
        status = server.stop()
        assert status == 0, server.stderr()
