"""Private PostgreSQL and MariaDB servers that a test may stop, kill and freeze.

Never the shared servers of the other tests: each server here has its own data
directory, port and socket under the test's temporary directory, and runs in a
process group of its own, so that ``SIGSTOP``/``SIGKILL`` reach exactly it
(the postmaster and all its backends). Running as root, PostgreSQL runs as
the ``postgres`` user (it refuses root) through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

__all__ = ["PrivateServer", "free_port", "private_server", "wait_until"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``probe`` until true, or fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    delay = 0.02
    while not probe():
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _answers(url: URL) -> bool:
    engine = create_engine(url, connect_args=_quick(url), poolclass=None)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def _quick(url: URL) -> dict[str, object]:
    if url.get_backend_name() == "postgresql":
        return {"connect_timeout": 2}
    return {"connect_timeout": 2, "read_timeout": 2}


class PrivateServer:
    """One database server of a test's own: start, stop, kill -9, freeze and thaw it."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        # Under /tmp itself: the postgres user must reach it (a test's tmp_path is root's only).
        self.root = Path(tempfile.mkdtemp(prefix=f"tasktoolkit-{backend}-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.root / "server.log"
        if backend == "postgresql":
            self._init_postgresql()
        else:
            self._init_mariadb()

    # -- set up --------------------------------------------------------------

    def _pg_bin(self, name: str) -> str:
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        if not found:
            raise FileNotFoundError(f"no PostgreSQL {name} under /usr/lib/postgresql/*/bin")
        return found[-1]

    def _as_postgres(self, args: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return args

    def _init_postgresql(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        _run(
            self._as_postgres(
                [
                    self._pg_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ]
            )
        )

    def _init_mariadb(self) -> None:
        _run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.data}",
                "--user=root" if os.geteuid() == 0 else f"--user={os.getlogin()}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ]
        )

    @property
    def url(self) -> URL:
        """A URL for the server's ``test`` database."""
        if self.backend == "postgresql":
            return make_url(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/test")
        return make_url(f"mysql+pymysql://root@127.0.0.1:{self.port}/test?charset=utf8mb4")

    def _command(self) -> list[str]:
        if self.backend == "postgresql":
            return self._as_postgres(
                [
                    self._pg_bin("postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=100",
                ]
            )
        return [
            "mariadbd",
            "--no-defaults",
            f"--datadir={self.data}",
            f"--port={self.port}",
            f"--socket={self.root / 'mysqld.sock'}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.root / 'mysqld.pid'}",
            "--skip-name-resolve",
            "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=200",
            "--user=root" if os.geteuid() == 0 else f"--user={os.getlogin()}",
        ]

    # -- life ------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Start the server (its data kept) and wait until it answers."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        admin = self.url.set(database="postgres" if self.backend == "postgresql" else "mysql")
        wait_until(lambda: _answers(admin), timeout, f"{self.backend} on port {self.port}")

    def create_database(self) -> None:
        admin = self.url.set(database="postgres" if self.backend == "postgresql" else "mysql")
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                if self.backend == "postgresql":
                    conn.execute(text('CREATE DATABASE "test"'))
                else:
                    conn.execute(text("CREATE DATABASE test CHARACTER SET utf8mb4"))
        finally:
            engine.dispose()

    def _signal(self, signum: int) -> None:
        # PostgreSQL's backends each start a session of their own (setsid):
        # signal the whole tree, parents first so that nothing new is forked.
        if self.process is None:
            return
        for pid in _tree(self.process.pid):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def freeze(self) -> None:
        """``SIGSTOP`` every process of the server: it accepts connections, answers nothing."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """``kill -9`` every process of the server (a crash); its data stays."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server cleanly (a fast shutdown)."""
        self._end(signal.SIGTERM if self.backend == "mariadb" else signal.SIGINT)

    def _end(self, signum: int) -> None:
        if self.process is None:
            return
        pids = _tree(self.process.pid)
        self.thaw()
        if signum == signal.SIGKILL:
            self._signal(signum)
        else:
            # The server itself, not runuser in front of it (which does not pass it on).
            server = pids[1] if self._command()[0] == "runuser" and len(pids) > 1 else pids[0]
            os.kill(server, signum)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(30)
        # Backends may outlive their postmaster by a moment: wait for them all.
        wait_until(lambda: not any(_alive(pid) for pid in pids), 30, f"{self.backend} to exit")
        self.process = None

    def close(self) -> None:
        """Stop the server and delete its files."""
        try:
            if self.process is not None:
                self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _tree(root: int) -> list[int]:
    """``root`` and its descendants, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    order, queue = [], [root]
    while queue:
        pid = queue.pop(0)
        order.append(pid)
        queue.extend(children.get(pid, []))
    return order


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, check=False)
    if done.returncode:
        output = (done.stdout + done.stderr).decode(errors="replace")
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{output}")


def private_server(backend: str) -> PrivateServer:
    """A started private server with an empty ``test`` database."""
    server = PrivateServer(backend)
    try:
        server.start()
        server.create_database()
    except BaseException:
        server.close()
        raise
    return server
