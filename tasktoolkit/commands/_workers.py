"""``tasktoolkit workers``: the workers, and when each last beat (the database's clock).

Every worker that announced itself and has not left (a row whose last beat is
older than its timeout is shown not live until the reaper purges it):
its id, kind, host and pid, task names and queues (``-`` for the default
queue), its last beat and whether it is live; ``-f table|json|value|csv`` and ``-c``
print the views ``GET /workers`` answers, as the other commands do.

Example::

    tasktoolkit workers --db-url postgresql+psycopg://app@db/app
    tasktoolkit workers --db-url sqlite:///app.db -f json
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tasktoolkit.commands._common import EXIT_OK, command, toolkit
from tasktoolkit.commands._output import output_arguments, print_list
from tasktoolkit.orm._registry import list_workers
from tasktoolkit.views import worker_view

__all__ = ["add_parser"]

#: The columns shown unless ``-c`` names others (every field of the view may be).
COLUMNS = ("id", "kind", "host", "pid", "names", "queues", "beat_at", "live")


def add_parser(commands: Any) -> None:
    """Add ``workers`` to ``commands`` (the main parser's subparsers)."""
    parser = command(commands, "workers", "List the workers and when each last beat.", run)
    output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with toolkit(args) as kit, kit.engine.connect() as conn:
        found = [worker_view(w) for w in list_workers(conn)]
    print_list(sys.stdout, args, found, default=COLUMNS)
    return EXIT_OK
