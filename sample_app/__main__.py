"""``python -m sample_app {demo,serve,agents}``.

* ``demo``: a tour on a throw-away SQLite database; ends by itself.
* ``serve``: the API and its agents in one process, until interrupted.
* ``agents``: the agents alone, for when the API runs under gunicorn.

Where the extras are installed, both count and trace what they do: ``serve``
answers ``/metrics`` (``[metrics]``), and under ``opentelemetry-instrument``
both send spans where the ``OTEL_*`` variables say (``[otel]``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from sqlalchemy.engine import Engine

    from sample_app.agents import Agents
    from tasktoolkit.celery import CeleryBridge
    from tasktoolkit.hooks import Hook

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
_BROKER_SERVE = (
    "publish the port tasks to Celery on this broker (amqp://... or redis://...), run by "
    "`agents --broker`; needs --agents 0"
)
_BROKER_AGENTS = "run the agents as a Celery worker of N processes on this broker"
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
    demo.add_argument(
        "--stay",
        action="store_true",
        help="keep serving after the tour (its pages stay up) until interrupted",
    )

    serve = commands.add_parser("serve", help="serve the API, with its agents, until interrupted")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="8080; 0 picks a free port")
    _add_agent_options(serve, broker_help=_BROKER_SERVE)
    serve.add_argument("--log-requests", action="store_true", help="log each request on stderr")

    agents = commands.add_parser("agents", help="run the agents alone, until interrupted")
    _add_agent_options(agents, broker_help=_BROKER_AGENTS)
    return parser


def _add_agent_options(command: argparse.ArgumentParser, broker_help: str) -> None:
    """The options ``serve`` and ``agents`` share: the database, the agents and the broker."""
    command.add_argument("--db-url", default=_DB, metavar="URL", help=_DB_HELP)
    command.add_argument(
        "--task-delay", type=_non_negative, default=0.5, metavar="S", help=_DELAY + " (0.5)"
    )
    command.add_argument("--agents", type=_count, default=2, metavar="N", help=_AGENTS + " (2)")
    command.add_argument(
        "--start-timeout", type=_start_timeout, default=None, metavar="S", help=_START
    )
    command.add_argument("--broker", default=None, metavar="URL", help=broker_help)


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
    args: argparse.Namespace,
    engine: Engine,
    what: str,
    wait: Callable[[threading.Event], object],
    sweep: Callable[[], int] | None = None,
) -> int:
    """Run the agents (and the reaper) while ``wait(stop)`` blocks, until SIGTERM (which sets
    ``stop``) or Ctrl-C, then stop them gracefully; then dispose ``engine``."""
    stop = threading.Event()
    _stop_on_sigterm(stop)
    agents = _agents_of(args, engine, count=args.agents, sweep=sweep)
    try:
        with agents:
            print(f"{what} (Ctrl-C to stop)", flush=True)
            wait(stop)
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()
    return 0


def _agents_of(
    args: argparse.Namespace, engine: Engine, *, count: int, sweep: Callable[[], int] | None
) -> Agents:
    from sample_app.agents import Agents

    return Agents(
        engine,
        count=count,
        task_delay=args.task_delay,
        start_timeout=args.start_timeout,
        sweep=sweep,
    )


def _observability() -> list[Hook]:
    """The hooks of the extras installed (nothing is imported of those that are not):
    metrics with ``[metrics]``, spans with ``[otel]``."""
    from importlib.util import find_spec

    hooks: list[Hook] = []
    if find_spec("prometheus_client") is not None:
        from tasktoolkit.metrics import Metrics

        hooks.append(Metrics())
    if find_spec("opentelemetry") is not None:
        from tasktoolkit.tracing import Tracing

        hooks.append(Tracing())
    return hooks


def _with_metrics(app: WSGIApplication, engine: Engine, hooks: list[Hook]) -> WSGIApplication:
    """``app`` answering ``/metrics`` too, with ``[metrics]`` (then ``hooks`` count)."""
    from importlib.util import find_spec

    if find_spec("prometheus_client") is None:
        return app
    from tasktoolkit import Settings, Toolkit
    from tasktoolkit.metrics import metrics_app

    scrape = metrics_app(Toolkit(engine, Settings(hooks=hooks)))

    def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return (scrape if environ.get("PATH_INFO") == "/metrics" else app)(environ, start_response)

    return serve


def _bridge(args: argparse.Namespace, engine: Engine) -> CeleryBridge | None:
    """The Celery bridge of ``--broker``, or ``None`` after saying in one line why not."""
    from sample_app.celery_agents import make_bridge
    from tasktoolkit import Settings, Toolkit
    from tasktoolkit.errors import InvalidBrokerError

    try:
        toolkit = Toolkit(engine, Settings(sweep_after="5s"))
        return make_bridge(toolkit, args.broker, task_delay=args.task_delay)
    except (InvalidBrokerError, ImportError) as exc:
        print(f"sample_app: cannot use --broker {args.broker!r}: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from sample_app._server import OperationPages, make_threaded_server, server_url
    from sample_app.app import make_app

    if args.broker is not None and args.agents:
        print("sample_app: --broker runs the agents on Celery: give --agents 0", file=sys.stderr)
        return 2
    engine = _engine(args.db_url)
    if engine is None:
        return 2
    bridge = None if args.broker is None else _bridge(args, engine)
    if args.broker is not None and bridge is None:
        engine.dispose()
        return 2
    try:
        hooks = _observability()
        app = make_app(engine, start_timeout=args.start_timeout, hooks=hooks)
        app = OperationPages(_with_metrics(app, engine, hooks))
        server = make_threaded_server(app, args.host, args.port, log=args.log_requests)
    except OSError as exc:
        print(f"sample_app: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        engine.dispose()
        return 2
    sweep = None if bridge is None else bridge.sweep
    try:
        url = server_url(server)
        return _until_stopped(
            args, engine, f"Serving on {url}/", lambda _: server.serve_forever(), sweep
        )
    finally:
        server.server_close()


def _agents(args: argparse.Namespace) -> int:
    engine = _engine(args.db_url)
    if engine is None:
        return 2
    from tasktoolkit import Settings, Toolkit

    Toolkit(engine, Settings(hooks=_observability()))  # its hooks ride on the engine
    if args.broker is None:
        return _until_stopped(
            args, engine, f"{args.agents} agents running", lambda stop: stop.wait()
        )
    from sample_app.celery_agents import run_worker

    bridge = _bridge(args, engine)
    if bridge is None:
        engine.dispose()
        return 2
    try:
        reaper = _agents_of(args, engine, count=0, sweep=bridge.sweep)
        run_worker(bridge, concurrency=args.agents, reaper=reaper)
    finally:
        engine.dispose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from sample_app.demo import run_demo

        return run_demo(task_delay=args.task_delay, agents=args.agents, stay=args.stay)
    if args.command == "serve":
        return _serve(args)
    return _agents(args)


if __name__ == "__main__":
    sys.exit(main())
