"""``tasktoolkit purge``: delete expired tasks and operations, in short batches.

Example::

    tasktoolkit purge --db-url postgresql+psycopg://app@db/app --older-than 1d
    tasktoolkit purge --db-url sqlite:///app.db --dry-run
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta
from typing import Any, TextIO

from tasktoolkit.commands._common import (
    EXIT_OK,
    batch_size,
    command,
    duration_option,
    plural,
    toolkit,
)

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Add ``purge`` to ``commands`` (the main parser's subparsers)."""
    about = "Delete expired tasks and operations, in short batches."
    parser = command(commands, "purge", about, run)
    duration_option(
        parser,
        "--older-than",
        "only records that expired at least this long ago (90s, 15m, 12h, 7d, 2w)",
        default=timedelta(0),
        positive=False,
    )
    parser.add_argument(
        "--batch-size",
        type=batch_size,
        default=None,
        metavar="N",
        help="the most rows per statement (default: the batch_size setting)",
    )
    parser.add_argument("--dry-run", action="store_true", help="count only, delete nothing")


def run(args: argparse.Namespace) -> int:
    changes = {} if args.batch_size is None else {"batch_size": args.batch_size}
    with toolkit(args, **changes) as kit:
        # The cutoff is the database's time, not this host's (one clock).
        expired = kit.purge(older_than=args.older_than, dry_run=True)
        if args.dry_run:
            what = f"expired before {_iso(expired.cutoff)}"
            print(f"would purge {_counts(expired.tasks, expired.operations)} ({what})")
            return EXIT_OK
        show = _Progress(sys.stderr, {"tasks": expired.tasks, "operations": expired.operations})
        result = kit.purge(older_than=args.older_than, progress=show)
        show.done()
    what = f"expired before {_iso(result.cutoff)}"
    print(f"purged {_counts(result.tasks, result.operations)} ({what}) in {result.seconds:.1f} s")
    return EXIT_OK


def _counts(tasks: int, operations: int) -> str:
    return f"{plural(tasks, 'task')} and {plural(operations, 'operation')}"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Progress:
    """``purging tasks: 12,000 of 50,000 (24%)`` on one line, redrawn; only on a terminal."""

    def __init__(self, stream: TextIO, totals: dict[str, int]) -> None:
        self.stream = stream
        self.totals = totals
        self.shown = stream.isatty()
        self.last = 0.0

    def __call__(self, kind: str, deleted: int) -> None:
        now = time.monotonic()
        if not self.shown or now - self.last < 0.1:
            return
        self.last = now
        total = max(self.totals.get(kind, 0), deleted)
        share = f" ({100 * deleted // total}%)" if total else ""
        self.stream.write(f"\rpurging {kind}: {deleted:,} of {total:,}{share}\x1b[K")
        self.stream.flush()

    def done(self) -> None:
        if self.shown and self.last:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
