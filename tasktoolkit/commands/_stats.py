"""``tasktoolkit stats``: per task name and queue, what waits, runs, fails and how long runs take.

Every project's tasks (the database's view; ``GET /tasks/stats`` shows a
caller its project's): pending and running counts, the age of the oldest
pending task, the last hour's failures by error code, and the 50th and 95th
percentiles of the run time of the attempts that ended in the last hour.
``-f json`` prints the views ``GET /tasks/stats`` answers.

Example::

    tasktoolkit stats --db-url postgresql+psycopg://app@db/app
    tasktoolkit stats --db-url sqlite:///app.db -f json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tasktoolkit.commands._common import EXIT_OK, command, toolkit
from tasktoolkit.orm._queries import ALL_PROJECTS
from tasktoolkit.orm._stats import task_stats
from tasktoolkit.views import stats_view

__all__ = ["add_parser"]

_COLUMNS = ("name", "queue", "pending", "running", "oldest", "failed_1h", "p50", "p95")


def add_parser(commands: Any) -> None:
    """Add ``stats`` to ``commands`` (the main parser's subparsers)."""
    about = "Per task name and queue: pending, running, oldest, failures and run times."
    parser = command(commands, "stats", about, run)
    parser.add_argument(
        "-f",
        "--format",
        choices=("table", "json"),
        default="table",
        help="a table (default), or the JSON views GET /tasks/stats answers",
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def run(args: argparse.Namespace) -> int:
    with toolkit(args) as kit, kit.engine.connect() as conn:
        found = [stats_view(s) for s in task_stats(conn, scope=ALL_PROJECTS)]
    if args.format == "json":
        print(json.dumps({"stats": found}, indent=2))
        return EXIT_OK
    rows = [
        (
            s["name"],
            "-" if s["queue"] is None else s["queue"],
            str(s["pending"]),
            str(s["running"]),
            _seconds(s["oldest_pending_seconds"]),
            ",".join(f"{code}={n}" for code, n in s["failed_last_hour"].items()) or "-",
            _seconds(s["run_seconds_p50"]),
            _seconds(s["run_seconds_p95"]),
        )
        for s in found
    ]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(_COLUMNS)]
    for row in (_COLUMNS, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return EXIT_OK
