"""``tasktoolkit workers``: the workers, and when each last beat (the database's clock).

Every worker that announced itself and has not left (a row whose last beat is
older than its timeout is shown not live until the reaper purges it):
its id, kind, host and pid, task names and queues (``-`` for the default
queue), and the seconds since its last beat. ``-f json`` prints the views
``GET /workers`` answers.

Example::

    tasktoolkit workers --db-url postgresql+psycopg://app@db/app
    tasktoolkit workers --db-url sqlite:///app.db -f json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tasktoolkit.commands._common import EXIT_OK, command, toolkit
from tasktoolkit.orm._registry import list_workers
from tasktoolkit.views import worker_view

__all__ = ["add_parser"]

_COLUMNS = ("id", "kind", "host", "pid", "names", "queues", "beat", "live")


def add_parser(commands: Any) -> None:
    """Add ``workers`` to ``commands`` (the main parser's subparsers)."""
    parser = command(commands, "workers", "List the workers and when each last beat.", run)
    parser.add_argument(
        "-f",
        "--format",
        choices=("table", "json"),
        default="table",
        help="a table (default), or the JSON views GET /workers answers",
    )


def run(args: argparse.Namespace) -> int:
    with toolkit(args) as kit, kit.engine.connect() as conn:
        found = list_workers(conn)
    if args.format == "json":
        print(json.dumps({"workers": [worker_view(w) for w in found]}, indent=2))
        return EXIT_OK
    rows = [
        (
            w.id,
            w.kind,
            w.host,
            str(w.pid),
            ",".join(w.names) or "-",
            ",".join("-" if q is None else q for q in w.queues) or "-",
            f"{w.age:.1f}s ago",
            "yes" if w.live else "no",
        )
        for w in found
    ]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(_COLUMNS)]
    for row in (_COLUMNS, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return EXIT_OK
