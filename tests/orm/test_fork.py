"""Engines across ``fork()``: a child gets connections of its own; the parent keeps its own."""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from tasktoolkit.orm import prepare_engine

SERVER_ID = {
    "postgresql": "SELECT pg_backend_pid()",
    "mysql": "SELECT CONNECTION_ID()",
    "mariadb": "SELECT CONNECTION_ID()",
}


def _who(conn: Connection) -> dict[str, Any]:
    """What tells one pooled connection from another: the server's id for it, a marker."""
    query = SERVER_ID.get(conn.dialect.name)
    return {
        "server_id": None if query is None else conn.execute(text(query)).scalar_one(),
        "marker": conn.connection.info.get("test_fork_marker"),
        "answer": conn.execute(text("SELECT 1")).scalar_one(),
    }


def _in_child(engine: Engine) -> dict[str, Any]:
    """Fork; the child reports what its connection is, then exits."""
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process with threads; this child
        # only uses the database and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child
        status = 0
        try:
            with engine.connect() as conn:
                report = json.dumps(_who(conn))
        except BaseException as exc:
            report, status = json.dumps({"error": repr(exc)}), 1
        os.write(write, report.encode())
        os._exit(status)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report
    return dict(report)


def test_a_forked_child_connects_anew_and_leaves_the_parents_connection_alone(
    engine: Engine,
) -> None:
    prepare_engine(engine)
    with engine.connect() as conn:
        conn.connection.info["test_fork_marker"] = "parent"
        parent = _who(conn)
    # The parent's connection is back in the pool when the process forks.
    child = _in_child(engine)
    assert child["marker"] is None  # not the parent's pooled connection
    assert child["answer"] == 1
    if parent["server_id"] is not None:
        assert child["server_id"] != parent["server_id"]
    with engine.connect() as conn:  # the child neither used nor closed it
        again = _who(conn)
    assert again == {**parent, "marker": "parent"}
