"""The ``tasktoolkit`` command: purge, reap, db upgrade, watch.

Every subcommand takes the database URL as ``--db-url`` (or from the
``TASKTOOLKIT_DB_URL`` environment variable). Bad input or a database that
cannot be reached ends the command with exit status 1 and one line on
standard error saying why; nothing is written.

Exit status: 0 done; 1 an error; 2 bad usage; 3 (``watch``) the operation
ended ``failed`` or ``cancelled``.

Examples::

    tasktoolkit purge --db-url postgresql+psycopg://app@db/app --older-than 1d
    tasktoolkit purge --db-url sqlite:///app.db --dry-run
    tasktoolkit reap --db-url mysql+pymysql://app@db/app --models myapp.models
    tasktoolkit reap --db-url postgresql+psycopg://app@db/app --celery myapp.tasks:bridge
    tasktoolkit db upgrade --db-url postgresql+psycopg://app@db/app
    tasktoolkit watch req-8c5a... --db-url sqlite:///app.db
    tasktoolkit watch https://api.example/operations/req-8c5a... --header "X-Auth-Token: ..."
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session

from tasktoolkit import __version__
from tasktoolkit._checks import HTTP_TOKEN
from tasktoolkit.endpoints._views import operation_view
from tasktoolkit.errors import InvalidDurationError, TaskToolkitError
from tasktoolkit.orm import Scope, Task, get_operation, operation_tasks, prepare_engine, purge, reap
from tasktoolkit.orm._expiry import MAX_TTL
from tasktoolkit.orm._lifespan import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE, check_batch_size
from tasktoolkit.orm._reaper import DEFAULT_EVERY, NOT_STARTED, WORKER_LOST

if TYPE_CHECKING:
    from tasktoolkit.celery import CeleryBridge

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_OPERATION_FAILED",
    "EXIT_USAGE",
    "CommandError",
    "main",
    "parse_duration",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_OPERATION_FAILED = 3
DB_URL_ENV = "TASKTOOLKIT_DB_URL"
PROG = "tasktoolkit"
_EVERYONE = Scope(all_projects=True)
_DURATION = re.compile(r"(\d+)\s*(w|d|h|m|s)", re.IGNORECASE)
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


class CommandError(Exception):
    """A reason to stop the command, printed as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``tasktoolkit: error: ...``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_duration(text: str) -> timedelta:
    """A duration such as ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` or ``1d12h``.

    :raises InvalidDurationError: not of that form, or longer than ten years.

    Example::

        >>> parse_duration("1d12h")
        datetime.timedelta(days=1, seconds=43200)
    """
    value = text.strip() if isinstance(text, str) else ""
    parts = _DURATION.findall(value)
    if not value or _DURATION.sub("", value).strip():
        raise InvalidDurationError(
            f"{text!r} is not a duration (write it like 90s, 15m, 12h, 7d, 2w or 1d12h)"
        )
    seconds = sum(int(n) * _UNITS[unit.lower()] for n, unit in parts)
    if seconds > MAX_TTL.total_seconds():
        raise InvalidDurationError(f"{text!r} is longer than {MAX_TTL.days} days")
    return timedelta(seconds=seconds)


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _batch_size(text: str) -> int:
    try:
        return check_batch_size(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number from 1 to {MAX_BATCH_SIZE}"
        ) from None


def _positive_duration(text: str) -> timedelta:
    value = _duration(text)
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than zero")
    return value


def _positive_seconds(text: str) -> float:
    return _positive_duration(text).total_seconds()


def _build_parser() -> _Parser:
    parser = _Parser(prog=PROG, description="Maintain tasktoolkit's tasks and operations.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help: str, run: Callable[[argparse.Namespace], int]) -> _Parser:
        sub: _Parser = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        _db_url(sub)
        return sub

    purge = command("purge", "Delete expired tasks and operations, in short batches.", _purge)
    purge.add_argument(
        "--older-than",
        type=_duration,
        default=timedelta(0),
        metavar="DURATION",
        help="only records that expired at least this long ago (90s, 15m, 12h, 7d, 2w)",
    )
    purge.add_argument(
        "--batch-size",
        type=_batch_size,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"the most rows per statement (default {DEFAULT_BATCH_SIZE})",
    )
    purge.add_argument("--dry-run", action="store_true", help="count only, delete nothing")
    reap = command("reap", "Move what workers and requests left behind.", _reap)
    _reap_arguments(reap)
    db = commands.add_parser("db", help="Database schema.", description="Database schema.")
    db_commands = db.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    upgrade: _Parser = db_commands.add_parser(
        "upgrade", help="Run the toolkit's migrations.", description="Run the toolkit's migrations."
    )
    upgrade.set_defaults(run=_db_upgrade)
    _db_url(upgrade)
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    _watch_arguments(command("watch", "Show an operation's tasks live until it ends.", _watch))
    return parser


def _reap_arguments(reap: _Parser) -> None:
    reap.add_argument("--batch-size", type=_batch_size, default=500, metavar="N")
    reap.add_argument(
        "--request-timeout",
        type=_positive_duration,
        default=None,
        metavar="DURATION",
        help="also end requests started longer ago than this (default: each one's own, 10m)",
    )
    reap.add_argument(
        "--start-timeout",
        type=_positive_duration,
        default=None,
        metavar="DURATION",
        help="also fail tasks pending since their spawn for longer (default: their rules')",
    )
    reap.add_argument(
        "--every",
        type=_positive_duration,
        default=DEFAULT_EVERY,
        metavar="DURATION",
        help="how often reapers run (default 1m): after a longer gap, workers get their "
        "heartbeat timeout again before any is called lost",
    )
    reap.add_argument(
        "--celery",
        default=None,
        metavar="MODULE:BRIDGE",
        help="also publish the tasks this CeleryBridge left unpublished (its sweeper)",
    )
    reap.add_argument(
        "--models",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (signal receivers; each task row carries its own rules)",
    )


def _db_url(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--db-url",
        default=os.environ.get(DB_URL_ENV),
        help=f"SQLAlchemy database URL (default: ${DB_URL_ENV})",
    )


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    value = value.strip()
    if not colon or not HTTP_TOKEN.match(name.strip()) or not value.isprintable():
        raise argparse.ArgumentTypeError(f"{text!r} is not a header (write it as 'Name: value')")
    return name.strip(), value


def _watch_arguments(watch: _Parser) -> None:
    watch.add_argument(
        "request_id",
        metavar="OPERATION",
        help="the operation's id (read from --db-url), or its Operation-Location URL (read "
        "through the API, waiting with Prefer: wait)",
    )
    watch.add_argument(
        "--interval",
        type=_positive_seconds,
        default=1.0,
        metavar="DURATION",
        help="between reads of the database (default 1s)",
    )
    watch.add_argument(
        "--timeout", type=_positive_seconds, default=None, metavar="DURATION", help="give up after"
    )
    watch.add_argument(
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="send this header with every request of a URL (X-Auth-Token: ...); repeatable",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (CommandError, TaskToolkitError, ValueError) as exc:
        return _fail(str(exc))
    except DBAPIError as exc:
        return _fail(f"database error: {_first_line(exc.orig)}")
    except SQLAlchemyError as exc:
        return _fail(f"database error: {_first_line(exc)}")
    except KeyboardInterrupt:
        return _fail("interrupted")


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextmanager
def _database(url: str | None, *, need_tables: bool = True) -> Iterator[Engine]:
    """An engine on ``url``, disposed of at the end; see :func:`_connect`."""
    engine = _connect(url, need_tables=need_tables)
    try:
        yield engine
    finally:
        engine.dispose()


def _connect(url: str | None, *, need_tables: bool = True) -> Engine:
    # (A new SQLite file is made only by ``db upgrade``, which does not need tables.)
    """An engine on ``url`` that has connected once (and, optionally, has our tables)."""
    if not url:
        raise CommandError(f"no database: pass --db-url or set ${DB_URL_ENV}")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CommandError(f"{url!r} is not a database URL") from None
    except ValueError as exc:  # a port that is not a number, ...
        raise CommandError(f"{url!r} is not a database URL: {_first_line(exc)}") from None
    shown = parsed.render_as_string(hide_password=True)
    if (
        need_tables
        and parsed.get_backend_name() == "sqlite"
        and parsed.database not in (None, "", ":memory:")
    ):
        if not Path(parsed.database or "").is_file():
            raise CommandError(f"cannot connect to {shown}: no such database file")
    try:
        engine = prepare_engine(create_engine(parsed))
    except (NoSuchModuleError, ImportError) as exc:
        raise CommandError(f"cannot use {shown}: {_first_line(exc)}") from None
    try:
        with engine.connect() as conn:
            has_tables = inspect(conn).has_table(Task.__tablename__)
    except DBAPIError as exc:
        engine.dispose()
        raise CommandError(f"cannot connect to {shown}: {_first_line(exc.orig)}") from None
    if need_tables and not has_tables:
        engine.dispose()
        raise CommandError(
            f"{shown} has no tasktoolkit tables; run: {PROG} db upgrade --db-url URL"
        )
    return engine


# -- purge ---------------------------------------------------------------------


def _purge(args: argparse.Namespace) -> int:
    with _database(args.db_url) as engine:
        return _purge_on(engine, args)


def _purge_on(engine: Engine, args: argparse.Namespace) -> int:
    # The cutoff is the database's time, not this host's (one clock).
    expired = purge(engine, older_than=args.older_than, dry_run=True)
    if args.dry_run:
        what = f"expired before {_iso(expired.cutoff)}"
        print(f"would purge {_counts(expired.tasks, expired.operations)} ({what})")
        return EXIT_OK
    show = _Progress(sys.stderr, {"tasks": expired.tasks, "operations": expired.operations})
    result = purge(
        engine, older_than=args.older_than, batch_size=args.batch_size, progress=show
    )
    show.done()
    what = f"expired before {_iso(result.cutoff)}"
    print(f"purged {_counts(result.tasks, result.operations)} ({what}) in {result.seconds:.1f} s")
    return EXIT_OK


def _counts(tasks: int, operations: int) -> str:
    return f"{_plural(tasks, 'task')} and {_plural(operations, 'operation')}"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' * (count != 1)}"


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


# -- reap ------------------------------------------------------------------------


def _reap(args: argparse.Namespace) -> int:
    for module in args.models:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise CommandError(f"--models {module}: {_first_line(exc)}") from None
    bridge = None if args.celery is None else _bridge(args.celery)
    with _database(args.db_url) as engine:
        result = reap(
            engine,
            batch_size=args.batch_size,
            request_timeout=args.request_timeout,
            start_timeout=args.start_timeout,
            every=args.every,
        )
    print(
        f"reaped {_plural(result.total, 'task')}: "
        f"{len(result.failed):,} failed ({WORKER_LOST}), "
        f"{len(result.requeued):,} re-queued, {len(result.cancelled):,} cancelled, "
        f"{len(result.not_started):,} failed ({NOT_STARTED}); "
        f"ended {_plural(len(result.requests), 'lost request')}"
        + (f"; settled {_plural(len(result.operations), 'operation')}" if result.operations else "")
    )
    if bridge is not None:
        print(f"published {_plural(bridge.sweep(), 'task')} left unpublished")
    return EXIT_OK


def _bridge(path: str) -> CeleryBridge:
    """The ``CeleryBridge`` at ``module:attribute`` (its own engine and broker)."""
    from tasktoolkit.celery import CeleryBridge

    module_name, _, attribute = path.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute or "bridge", None)
    except ImportError as exc:
        raise CommandError(f"--celery {path}: {_first_line(exc)}") from None
    if not isinstance(found, CeleryBridge):
        raise CommandError(f"--celery {path}: not a CeleryBridge (write MODULE:ATTRIBUTE)")
    return found


# -- db upgrade --------------------------------------------------------------


def _db_upgrade(args: argparse.Namespace) -> int:
    from tasktoolkit.orm import migrations

    with _database(args.db_url, need_tables=False) as engine:
        migrations.upgrade(engine, args.revision)
        print(f"database is at {args.revision} ({migrations.current(engine) or 'empty'})")
    return EXIT_OK


# -- watch -------------------------------------------------------------------


#: The longest wait asked of the API per request (the server caps it too).
_HTTP_WAIT = 30


def _watch(args: argparse.Namespace) -> int:
    if args.request_id.startswith(("http://", "https://")):
        return _watch_url(args)
    if args.header:
        raise CommandError("--header is for an operation's URL, not its id")
    with _database(args.db_url) as engine:
        return _watch_on(engine, args)


def _watch_on(engine: Engine, args: argparse.Namespace) -> int:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    screen = _Screen(sys.stdout)
    while True:
        with Session(engine) as session:
            operation = get_operation(session, args.request_id, scope=_EVERYONE)
            tasks = operation_tasks(session, args.request_id, scope=_EVERYONE)
            state = _show(screen, operation_view(operation, admin=True, tasks=tasks))
        if state != "running":
            return EXIT_OK if state == "succeeded" else EXIT_OPERATION_FAILED
        if deadline is not None and time.monotonic() >= deadline:
            raise CommandError(f"{args.request_id} is still running after --timeout")
        # Polling the database is this command's job: it waits for other processes.
        time.sleep(args.interval)


def _watch_url(args: argparse.Namespace) -> int:
    """Follow an operation through the API: each GET waits (``Prefer: wait``) for a change."""
    url: str = args.request_id
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    screen = _Screen(sys.stdout)
    etag: str | None = None
    state = ""
    while True:
        left = _HTTP_WAIT if deadline is None else max(0.0, deadline - time.monotonic())
        # The first read shows where it is at once; the next ones wait for a change.
        wait = 0 if state == "" else int(min(_HTTP_WAIT, left))
        headers = {**dict(args.header), "Accept": "application/json", "Prefer": f"wait={wait}"}
        if etag is not None:
            headers["If-None-Match"] = etag
        document, etag = _get(url, headers, timeout=wait + 30, etag=etag)
        if document is not None:
            if not isinstance(document.get("operation"), dict):
                raise CommandError(f"{url} is not an operation's URL")
            state = _show(screen, document["operation"])
        if state != "running":
            return EXIT_OK if state == "succeeded" else EXIT_OPERATION_FAILED
        if deadline is not None and time.monotonic() >= deadline:
            raise CommandError(f"{url} is still running after --timeout")


def _get(
    url: str, headers: dict[str, str], *, timeout: float, etag: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON document at ``url`` and its ETag; ``None`` when unchanged (304)."""
    try:
        with urlopen(Request(url, headers=headers), timeout=timeout) as response:
            document: dict[str, Any] = json.load(response)
            return document, response.headers.get("ETag")
    except HTTPError as error:
        if error.code == 304:
            return None, etag
        detail = _error_detail(error)
        raise CommandError(f"{url}: HTTP {error.code}{detail}") from None
    except URLError as error:
        raise CommandError(f"cannot reach {url}: {error.reason}") from None
    except (OSError, ValueError) as error:
        raise CommandError(f"{url}: {_first_line(error)}") from None


def _error_detail(error: HTTPError) -> str:
    try:
        return f": {json.load(error)['errors'][0]['detail']}"
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def _show(screen: _Screen, operation: dict[str, Any]) -> str:
    """Draw an operation (its API view) and its tasks; its state."""
    status = operation.get("http_status")
    header = f"{operation.get('id')} {operation.get('method')} {operation.get('path')}: " + str(
        operation.get("state")
    )
    if status is not None:
        header += f" (HTTP {status})"
    lines = [header]
    for task in operation.get("tasks") or []:
        lines += [_task_line(task), *_attempt_lines(task)]
    screen.show(lines)
    return str(operation.get("state"))


def _task_line(task: dict[str, Any]) -> str:
    progress = "" if task.get("progress") is None else f"{task['progress']:>3}%"
    error = task.get("error") or {}
    detail = error.get("message") if task.get("state") == "failed" else task.get("message")
    where = f"{task.get('resource_type')}/{task.get('resource_id')}"
    name, state = task.get("name") or "", task.get("state") or ""
    return f"  {name:<24} {where:<45} {state:<9} {progress:>4}  {detail or ''}".rstrip()


def _attempt_lines(task: dict[str, Any]) -> list[str]:
    """One line per attempt of a task (its API view) that started more than once, or
    waits to start again."""
    attempts = task.get("attempts") or []
    waiting = task.get("not_before")
    if len(attempts) < 2 and not waiting:
        return []
    lines = []
    for attempt in attempts:
        error = attempt.get("error") or {}
        why = f" {error.get('code')}: {error.get('message')}" if error else ""
        where = f" on {attempt['host']}" if attempt.get("host") else ""
        outcome = attempt.get("outcome") or "running"
        lines.append(f"    attempt {attempt.get('number')}{where}: {outcome}{why}")
    if waiting:
        lines.append(f"    next attempt not before {waiting}")
    return lines


class _Screen:
    """On a terminal, redraws the block in place; elsewhere prints lines that changed."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.lines: list[str] = []

    def show(self, lines: list[str]) -> None:
        if self.tty:
            if self.lines:
                self.stream.write(f"\x1b[{len(self.lines)}F\x1b[J")
            self.stream.write("".join(line + "\n" for line in lines))
        else:
            seen = set(self.lines)
            self.stream.write("".join(line + "\n" for line in lines if line not in seen))
        self.stream.flush()
        self.lines = lines


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
