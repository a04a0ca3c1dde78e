"""Private test databases on SQLite, PostgreSQL and MariaDB, created per run.

The server URLs can be overridden with ``TASKTOOLKIT_TEST_POSTGRESQL_URL`` and
``TASKTOOLKIT_TEST_MARIADB_URL`` (any database on the server; a private one is
created beside it). An unreachable server skips its tests, except under
``CI=true``, where it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url

BACKENDS = ("sqlite", "postgresql", "mariadb")

SERVER_URLS = {
    "postgresql": os.environ.get(
        "TASKTOOLKIT_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get(
        "TASKTOOLKIT_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"
    ),
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(backend: str, reason: str) -> None:
    """Skip (or, under CI=true, fail) because ``backend`` cannot be used."""
    message = f"{backend} is unreachable at {SERVER_URLS.get(backend, '?')}: {reason}"
    if in_ci():
        pytest.fail(message + " (CI=true: every backend must be tested)", pytrace=False)
    pytest.skip(message)


@contextmanager
def private_database(
    backend: str, tmp_dir: Path, *, mariadb_collation: str = "utf8mb4_bin"
) -> Iterator[URL]:
    """Create a database of its own for this run; drop it afterwards.

    :param mariadb_collation: the MariaDB database's default collation (the
        server's own default ignores case: ``utf8mb4_general_ci``).
    """
    name = f"tasktoolkit_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    if backend == "sqlite":
        yield make_url(f"sqlite:///{tmp_dir / (name + '.db')}")
        return
    server = make_url(SERVER_URLS[backend])
    admin = create_engine(server, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(
                    text(
                        f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 "
                        f"COLLATE {mariadb_collation}"
                    )
                )
    except Exception as exc:
        admin.dispose()
        unavailable(backend, f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    try:
        yield server.set(database=name)
    finally:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


def engine_for(url: URL) -> Engine:
    """An engine for a test database, prepared for the toolkit."""
    from tasktoolkit.orm import prepare_engine

    return prepare_engine(create_engine(url))
