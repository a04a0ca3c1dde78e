"""Broken requests sent as raw bytes to the sample under gunicorn, on SQLite, PostgreSQL and
MariaDB: a query whose percent-encoded bytes are not UTF-8 and a body shorter than its
``Content-Length`` (the client stops sending) are 400s carrying the request id, never 500s.

The bytes go through a plain socket, so nothing between the test and the server fixes them.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import URL

from tests.sample_app.conftest import DEADLINE, sample_db, wait_for  # noqa: F401
from tests.sample_app.servers import gunicorn_url, start_gunicorn
from tests.sample_app.test_commands import PASTE_INI

HEADERS = "Host: test\r\nX-Project-Id: raw\r\nConnection: close\r\n"


@dataclass(frozen=True)
class Answer:
    """A raw HTTP answer: its status, headers (lower-cased names) and JSON body."""

    status: int
    headers: dict[str, str]
    body: Any


@pytest.fixture(scope="module")
def address(
    sample_db: URL,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, int]]:
    """gunicorn (2 sync workers) serving the sample's paste pipeline: its host and port."""
    tmp_path = tmp_path_factory.mktemp("raw")
    server = start_gunicorn(
        PASTE_INI, tmp_path, tmp_path / "gunicorn.log", "--workers", "2", db_url=sample_db
    )
    url = wait_for(
        lambda: gunicorn_url(server),
        lambda found: found != "" or server.process.poll() is not None,
        "gunicorn listening",
    )
    assert url, server.stderr()
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    yield parts.hostname, parts.port
    assert server.stop() == 0, server.stderr()
    assert "Traceback" not in server.stderr()


def send(address: tuple[str, int], raw: bytes, *, stop_sending: bool = False) -> Answer:
    """Send ``raw``; with ``stop_sending`` the client then shuts its side (sends no more).
    Reads the whole answer (the server closes the connection)."""
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        sock.sendall(raw)
        if stop_sending:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, json.loads(body))


def assert_400_with_request_id(answer: Answer, code: str) -> None:
    assert answer.status == 400, answer
    (error,) = answer.body["errors"]
    assert error["code"] == code
    assert error["request_id"] == answer.headers["x-request-id"]
    assert error["request_id"].startswith("req-")


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/networks?x=%ff", id="value"),
        pytest.param("/networks?%ff=1", id="name"),
        pytest.param("/ports?network_id=%ff", id="filter"),
        pytest.param("/tasks?state=%c3%28", id="toolkit-endpoint"),
    ],
)
def test_a_query_that_is_not_utf8_is_a_400_with_the_request_id(
    address: tuple[str, int], target: str
) -> None:
    answer = send(address, f"GET {target} HTTP/1.1\r\n{HEADERS}\r\n".encode())
    assert_400_with_request_id(answer, "tasktoolkit.invalid_filter")


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("", id="read-by-the-app"),
        pytest.param("Idempotency-Key: short-body\r\n", id="keyed-read-by-the-middleware"),
    ],
)
def test_a_body_shorter_than_its_content_length_is_a_400_with_the_request_id(
    address: tuple[str, int], extra: str
) -> None:
    sent = b'{"network": {"name": "cut'
    head = (
        f"POST /networks HTTP/1.1\r\n{HEADERS}{extra}Content-Type: application/json\r\n"
        f"Content-Length: {len(sent) + 100}\r\n\r\n"
    )
    answer = send(address, head.encode() + sent, stop_sending=True)
    assert_400_with_request_id(answer, "tasktoolkit.incomplete_body")
    listed = send(address, f"GET /networks HTTP/1.1\r\n{HEADERS}\r\n".encode())
    assert listed.status == 200 and listed.body["networks"] == []
