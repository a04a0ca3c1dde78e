"""``python -m sample_app {demo,serve,agents}``.

* ``demo``: a tour on a throw-away SQLite database; ends by itself.
* ``serve``: the API and its agents in one process, until interrupted.
* ``agents``: the agents alone, for when the API runs under gunicorn.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["main"]

T = TypeVar("T", int, float)


def _bounded(
    kind: Callable[[str], T], low: T, high: T, what: str, out_of_range: str
) -> Callable[[str], T]:
    """An argparse ``type``: a ``kind`` number from ``low`` to ``high``, else a one-line error."""

    def parse(value: str) -> T:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{value!r} {out_of_range}")
        return number

    return parse


_non_negative = _bounded(float, 0.0, 3600.0, "a number", "must be between 0 and 3600 seconds")
_count = _bounded(int, 0, 64, "an integer", "must be between 0 and 64")
_port = _bounded(int, 0, 65535, "a port number", "is not a port number (0-65535)")


_DB = "sqlite:///sample_app.db"
_DB_HELP = f"SQLAlchemy URL of the database ({_DB}); PostgreSQL and MariaDB URLs work too"
_DELAY = "seconds each task takes"
_AGENTS = "worker threads; 0 runs none (the reaper still runs)"
_START = "a task no agent starts within S seconds fails not_started (default: 1 hour)"


def _start_timeout(value: str) -> float:
    number = _non_negative(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1 second")
    return number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sample_app",
        description="A small Neutron-like API (networks, ports) that shows tasktoolkit at work. "
        "It trusts X-Project-Id and X-Roles without authentication: never expose it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="a tour on a throw-away SQLite database")
    demo.add_argument(
        "--task-delay", type=_non_negative, default=0.4, metavar="S", help=_DELAY + " (0.4)"
    )
    demo.add_argument("--agents", type=_count, default=4, metavar="N", help=_AGENTS + " (4)")

    serve = commands.add_parser("serve", help="serve the API, with its agents, until interrupted")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="8080; 0 picks a free port")
    serve.add_argument("--db-url", default=_DB, metavar="URL", help=_DB_HELP)
    serve.add_argument(
        "--task-delay", type=_non_negative, default=0.5, metavar="S", help=_DELAY + " (0.5)"
    )
    serve.add_argument("--agents", type=_count, default=2, metavar="N", help=_AGENTS + " (2)")
    serve.add_argument(
        "--start-timeout", type=_start_timeout, default=None, metavar="S", help=_START
    )
    serve.add_argument("--log-requests", action="store_true", help="log each request on stderr")

    agents = commands.add_parser("agents", help="run the agents alone, until interrupted")
    agents.add_argument("--db-url", default=_DB, metavar="URL", help=_DB_HELP)
    agents.add_argument(
        "--task-delay", type=_non_negative, default=0.5, metavar="S", help=_DELAY + " (0.5)"
    )
    agents.add_argument("--agents", type=_count, default=2, metavar="N", help=_AGENTS + " (2)")
    agents.add_argument(
        "--start-timeout", type=_start_timeout, default=None, metavar="S", help=_START
    )
    return parser


def _stop_on_sigterm(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _engine(url: str) -> Engine | None:
    """The engine for ``--db-url``, or ``None`` after saying in one line why not."""
    from sqlalchemy.exc import SQLAlchemyError

    from sample_app.engine import create_sample_engine

    try:
        return create_sample_engine(url, create=True)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"sample_app: cannot use --db-url {url!r}: {reason}", file=sys.stderr)
        return None


def _until_stopped(
    args: argparse.Namespace, engine: Engine, what: str, wait: Callable[[threading.Event], object]
) -> int:
    """Run the agents (and the reaper) while ``wait(stop)`` blocks, until SIGTERM (which sets
    ``stop``) or Ctrl-C, then stop them gracefully; then dispose ``engine``."""
    from sample_app.agents import Agents

    stop = threading.Event()
    _stop_on_sigterm(stop)
    agents = Agents(
        engine, count=args.agents, task_delay=args.task_delay, start_timeout=args.start_timeout
    )
    try:
        with agents:
            print(f"{what} (Ctrl-C to stop)", flush=True)
            wait(stop)
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()
    return 0


def _serve(args: argparse.Namespace) -> int:
    from sample_app._server import make_threaded_server, server_url
    from sample_app.app import make_app

    engine = _engine(args.db_url)
    if engine is None:
        return 2
    try:
        app = make_app(engine, start_timeout=args.start_timeout)
        server = make_threaded_server(app, args.host, args.port, log=args.log_requests)
    except OSError as exc:
        print(f"sample_app: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        engine.dispose()
        return 2
    try:
        url = server_url(server)
        return _until_stopped(args, engine, f"Serving on {url}/", lambda _: server.serve_forever())
    finally:
        server.server_close()


def _agents(args: argparse.Namespace) -> int:
    engine = _engine(args.db_url)
    if engine is None:
        return 2
    return _until_stopped(args, engine, f"{args.agents} agents running", lambda stop: stop.wait())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from sample_app.demo import run_demo

        return run_demo(task_delay=args.task_delay, agents=args.agents)
    if args.command == "serve":
        return _serve(args)
    return _agents(args)


if __name__ == "__main__":
    sys.exit(main())
