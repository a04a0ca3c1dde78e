"""A private Redis server a test may kill with ``kill -9``: never the shared one.

Its own port and directory, no persistence (no RDB snapshot, no AOF), so a
``kill -9`` loses every message it held, as a Redis broker run that way does;
a process group of its own, so the signal reaches exactly it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.faults.servers import free_port, wait_until

__all__ = ["PrivateRedis"]


class PrivateRedis:
    """One ``redis-server`` of a test's own: start it, kill it, start it again (empty)."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            raise FileNotFoundError("no redis-server on PATH")
        self.root = Path(tempfile.mkdtemp(prefix="tasktoolkit-redis-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        """Start the server (empty) and wait until it answers."""
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--dir", str(self.root),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_until(self._answers, 30, f"redis-server on port {self.port}")

    def kill(self) -> None:
        """``kill -9`` the server: what it held is gone."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
            self.process = None

    def queued(self, queue: str = "celery") -> int:
        """How many messages wait in Celery's ``queue`` (a Redis list)."""
        import redis

        client = redis.Redis(port=self.port)
        try:
            return int(client.llen(queue))
        finally:
            client.close()

    def close(self) -> None:
        try:
            self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
