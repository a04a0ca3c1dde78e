"""``tasktoolkit reap``: move what workers and requests left behind, and sweep a bridge.

``--bridge MODULE:OBJECT`` names a queue bridge (any object with a ``sweep()``
method, which publishes again what its queue should hold and returns how many
tasks it published): after the reaper's pass, the command calls it once.

Example::

    tasktoolkit reap --db-url mysql+pymysql://app@db/app --models myapp.models
    tasktoolkit reap --db-url postgresql+psycopg://app@db/app --bridge myapp.tasks:bridge
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, Protocol

from tasktoolkit.commands._common import (
    EXIT_OK,
    CommandError,
    batch_size,
    command,
    duration_option,
    first_line,
    plural,
    toolkit,
)
from tasktoolkit.errors import ConfigurationError
from tasktoolkit.orm._reaper import NOT_STARTED, WORKER_LOST
from tasktoolkit.settings import resolve

__all__ = ["Sweeper", "add_parser"]


class Sweeper(Protocol):
    """What ``--bridge`` names: a queue bridge's sweeper (``bridge.sweep()``)."""

    def sweep(self) -> int:
        """Publish again what the queue should hold; how many tasks were published."""
        ...


def add_parser(commands: Any) -> None:
    """Add ``reap`` to ``commands`` (the main parser's subparsers)."""
    about = "Move what workers and requests left behind."
    parser = command(commands, "reap", about, run)
    parser.add_argument(
        "--batch-size",
        type=batch_size,
        default=None,
        metavar="N",
        help="the most rows per transaction (default: the batch_size setting)",
    )
    duration_option(
        parser,
        "--request-timeout",
        "also end requests started longer ago than this (default: each one's own, 10m)",
    )
    duration_option(
        parser,
        "--start-timeout",
        "also fail tasks pending since their spawn for longer (default: their rules')",
    )
    duration_option(
        parser,
        "--every",
        "how often reapers run (default: the reap_every setting, 1m): after a longer gap, "
        "workers get their heartbeat timeout again before any is called lost",
    )
    parser.add_argument(
        "--bridge",
        default=None,
        metavar="MODULE:OBJECT",
        help="then call this queue bridge's sweep(): publish what its queue does not have",
    )
    parser.add_argument(
        "--models",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (signal receivers; each task row carries its own rules)",
    )


def run(args: argparse.Namespace) -> int:
    for module in args.models:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise CommandError(f"--models {module}: {first_line(exc)}") from None
    bridge = None if args.bridge is None else _bridge(args.bridge)
    changes = {"batch_size": args.batch_size, "reap_every": args.every}
    given = {name: value for name, value in changes.items() if value is not None}
    with toolkit(args, **given) as kit:
        result = kit.reap(request_timeout=args.request_timeout, start_timeout=args.start_timeout)
    print(
        f"reaped {plural(result.total, 'task')}: "
        f"{len(result.failed):,} failed ({WORKER_LOST}), "
        f"{len(result.requeued):,} re-queued, {len(result.cancelled):,} cancelled, "
        f"{len(result.not_started):,} failed ({NOT_STARTED}); "
        f"ended {plural(len(result.requests), 'lost request')}"
        + (f"; settled {plural(len(result.operations), 'operation')}" if result.operations else "")
    )
    if bridge is not None:
        print(f"swept: published {plural(bridge.sweep(), 'task')} the queue did not have")
    return EXIT_OK


def _bridge(path: str) -> Sweeper:
    """The bridge at ``module:attribute`` (with its own engine and broker)."""
    try:
        found = resolve(path, "--bridge")
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from None
    if not callable(getattr(found, "sweep", None)):
        raise CommandError(f"--bridge {path}: {found!r} is not a bridge (it has no sweep())")
    return found  # type: ignore[no-any-return]
