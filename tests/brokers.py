"""Private broker space per run on the machine's RabbitMQ and Redis, cleaned up after.

- RabbitMQ (``127.0.0.1:5672``, guest/guest): a virtual host of its own,
  made and deleted with ``rabbitmqctl``; its queues and exchanges go with it.
- Redis (``127.0.0.1:6379``): a database number of its own (1 to 15), claimed
  with a key set only if absent, flushed afterwards.

The servers can be overridden with ``TASKTOOLKIT_TEST_RABBITMQ_URL`` and
``TASKTOOLKIT_TEST_REDIS_URL``. An unreachable broker skips its tests, except
under ``CI=true``, where it fails them (as :mod:`tests.databases` does).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

from tests.databases import in_ci

BROKERS = ("rabbitmq", "redis")

SERVER_URLS = {
    "rabbitmq": os.environ.get(
        "TASKTOOLKIT_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672"
    ),
    "redis": os.environ.get("TASKTOOLKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
}


def unavailable(broker: str, reason: str) -> None:
    """Skip (or, under CI=true, fail) because ``broker`` cannot be used."""
    message = f"{broker} is unreachable at {SERVER_URLS[broker]}: {reason}"
    if in_ci():
        pytest.fail(message + " (CI=true: every broker must be tested)", pytrace=False)
    pytest.skip(message)


def _reachable(url: str) -> str | None:
    """Why the server of ``url`` cannot be reached, or ``None``."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2).close()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@contextmanager
def private_broker(broker: str) -> Iterator[str]:
    """A broker URL of this run's own; removed afterwards."""
    server = SERVER_URLS[broker]
    why = _reachable(server)
    if why is not None:
        unavailable(broker, why)
    if broker == "rabbitmq":
        with _rabbitmq_vhost(server) as url:
            yield url
    else:
        with _redis_database(server) as url:
            yield url


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def _rabbitmq_vhost(server: str) -> Iterator[str]:
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmq", "rabbitmqctl is not installed (needed for a private vhost)")
    vhost = f"tasktoolkit-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        unavailable("rabbitmq", f"cannot make a vhost: {exc}")
    try:
        yield f"{server.rstrip('/')}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@contextmanager
def _redis_database(server: str) -> Iterator[str]:
    import redis

    claim = f"tasktoolkit-test:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    for number in range(1, 16):
        client = redis.Redis.from_url(f"{server.rstrip('/')}/{number}")
        # Free databases only: a database another run (or anything else) uses has keys.
        if client.dbsize() == 0 and client.set("tasktoolkit-test-claim", claim, nx=True):
            break
        client.close()
    else:
        unavailable("redis", "no free database number from 1 to 15")
    try:
        yield f"{server.rstrip('/')}/{number}"
    finally:
        client.flushdb()
        client.close()
