"""``tasktoolkit stats``: per task name and queue, what waits, runs, fails and how long runs take.

Every project's tasks (the database's view; ``GET /tasks/stats`` shows a
caller its project's): pending and running counts, the age of the oldest
pending task, the last hour's failures by error code, and the 50th and 95th
percentiles of the run time of the attempts that ended in the last hour.
``-f table|json|value|csv`` and ``-c`` print the views ``GET /tasks/stats`` answers.

Example::

    tasktoolkit stats --db-url postgresql+psycopg://app@db/app
    tasktoolkit stats --db-url sqlite:///app.db -f json
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tasktoolkit.commands._common import EXIT_OK, command, toolkit
from tasktoolkit.commands._output import output_arguments, print_list
from tasktoolkit.orm._queries import ALL_PROJECTS
from tasktoolkit.orm._stats import task_stats
from tasktoolkit.views import stats_view

__all__ = ["add_parser"]

#: The columns shown unless ``-c`` names others (every field of the view may be).
COLUMNS = (
    "name",
    "queue",
    "pending",
    "running",
    "oldest_pending_seconds",
    "failed_last_hour",
    "run_seconds_p50",
    "run_seconds_p95",
)


def add_parser(commands: Any) -> None:
    """Add ``stats`` to ``commands`` (the main parser's subparsers)."""
    about = "Per task name and queue: pending, running, oldest, failures and run times."
    parser = command(commands, "stats", about, run)
    output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with toolkit(args) as kit, kit.engine.connect() as conn:
        found = [stats_view(s) for s in task_stats(conn, scope=ALL_PROJECTS)]
    print_list(sys.stdout, args, found, default=COLUMNS)
    return EXIT_OK
