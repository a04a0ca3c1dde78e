"""``tasktoolkit health``: a liveness probe for a worker's container or systemd unit.

Exits 0 when a worker (or reaper) it identifies is live (it beat within its
timeout, on the database's clock), printing one line saying which; else 1, with
one line on standard error saying why (none announced, or the last beat too
old, or the database unreachable). Which worker:

- ``--worker-id ID``: that one (a database worker's ``host``, ``<hostname>:<pid>``
  by default);
- else every worker on ``--host`` (default: this machine's hostname, which in
  a container is the container's), narrowed to ``--pid`` and ``--kind`` when
  given: any one of them live is enough.

Examples::

    tasktoolkit health --db-url postgresql+psycopg://app@db/app            # a container
    tasktoolkit health --db-url ... --pid $MAINPID --kind database         # systemd
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

from tasktoolkit.commands._common import EXIT_OK, CommandError, command, toolkit
from tasktoolkit.orm._registry import KINDS, LiveWorker, list_workers

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Add ``health`` to ``commands`` (the main parser's subparsers)."""
    about = "Exit 0 when this host's worker (or reaper) beat within its timeout, else 1."
    parser = command(commands, "health", about, run)
    parser.add_argument("--worker-id", metavar="ID", help="the worker's identity, exactly")
    parser.add_argument("--host", help="the workers on this host (default: this machine's name)")
    parser.add_argument("--pid", type=int, help="only the worker of this process id")
    parser.add_argument("--kind", choices=KINDS, help="only workers of this kind")


def _wanted(args: argparse.Namespace) -> str:
    if args.worker_id is not None:
        return f"worker {args.worker_id}"
    what = f"{args.kind} worker" if args.kind else "worker"
    pid = f" with pid {args.pid}" if args.pid is not None else ""
    return f"{what} on host {args.host or socket.gethostname()}{pid}"


def _matches(args: argparse.Namespace, worker: LiveWorker) -> bool:
    if args.worker_id is not None:
        return bool(worker.id == args.worker_id)
    return bool(
        worker.host == (args.host or socket.gethostname())
        and (args.pid is None or worker.pid == args.pid)
        and (args.kind is None or worker.kind == args.kind)
    )


def run(args: argparse.Namespace) -> int:
    with toolkit(args) as kit, kit.engine.connect() as conn:
        found = [w for w in list_workers(conn) if _matches(args, w)]
    wanted = _wanted(args)
    live = [w for w in found if w.live]
    if live:
        best = min(live, key=lambda w: w.age)
        print(f"live: {best.id} ({best.kind}) beat {best.age:.1f}s ago, within {best.timeout}s")
        return EXIT_OK
    if not found:
        raise CommandError(f"no {wanted} has announced itself (or it left)")
    last = min(found, key=lambda w: w.age)
    raise CommandError(
        f"{wanted} not live: {last.id} last beat {last.age:.1f}s ago, past its {last.timeout}s"
    )
