"""What every command shares: exit codes, one-line errors, the database and the settings.

Every command that reads the database takes ``--db-url`` (or
``$TASKTOOLKIT_DB_URL``) and the toolkit's settings, read from the one
declared list of options (:data:`tasktoolkit.settings.OPTIONS`) as text:
``--config FILE`` of ``name = value`` lines, then ``--set NAME=VALUE``
(repeatable), which wins. Durations take the one form (``90s``, ``15m``,
``1d12h``, or seconds).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from tasktoolkit._checks import whole_number
from tasktoolkit.durations import duration
from tasktoolkit.errors import InvalidDurationError
from tasktoolkit.orm import Task, prepare_engine
from tasktoolkit.settings import MAX_BATCH_SIZE, Settings
from tasktoolkit.toolkit import Toolkit

__all__ = [
    "DB_URL_ENV",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OPERATION_FAILED",
    "EXIT_USAGE",
    "PROG",
    "CommandError",
    "Parser",
    "batch_size",
    "command",
    "duration_option",
    "first_line",
    "interrupted",
    "plural",
    "settings_of",
    "toolkit",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_OPERATION_FAILED = 3
#: 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130
DB_URL_ENV = "TASKTOOLKIT_DB_URL"
PROG = "tasktoolkit"


class CommandError(Exception):
    """A reason to stop the command, printed as one line."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``tasktoolkit: error: ...``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' * (count != 1)}"


def _duration(*, positive: bool = False) -> Callable[[str], timedelta]:
    """An argparse ``type`` reading a duration (:func:`tasktoolkit.durations.duration`).

    :param positive: refuse zero.
    """

    def read(text: str) -> timedelta:
        try:
            value = duration(text)
        except InvalidDurationError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("duration: ")) from None
        if positive and value <= timedelta(0):
            raise argparse.ArgumentTypeError(f"{text!r} must be longer than zero")
        return value

    return read


def duration_option(
    parser: argparse.ArgumentParser,
    flag: str,
    help: str,
    *,
    default: timedelta | None = None,
    positive: bool = True,
) -> None:
    """Add ``flag``, a duration (``90s``, ``15m``, ``1d12h``, or seconds)."""
    parser.add_argument(
        flag,
        type=_duration(positive=positive),
        default=default,
        metavar="DURATION",
        help=help,
    )


def batch_size(text: str) -> int:
    """An argparse ``type``: the rows of one transaction (``Settings.batch_size``)."""
    try:
        return whole_number(int(text), "--batch-size", maximum=MAX_BATCH_SIZE)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number from 1 to {MAX_BATCH_SIZE}"
        ) from None


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a setting (write it as NAME=VALUE)")
    return name.strip(), value


def command(
    commands: Any, name: str, about: str, run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """A command ``name`` of ``commands`` (a parser's subparsers) that ``run`` runs, with
    the database's and the settings' options (``--db-url``, ``--config``, ``--set``)."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=about, description=about)
    parser.set_defaults(run=run)
    _database_arguments(parser)
    return parser


def _database_arguments(parser: argparse.ArgumentParser) -> None:
    """``--db-url``, ``--config FILE`` and ``--set NAME=VALUE``."""
    parser.add_argument(
        "--db-url",
        default=os.environ.get(DB_URL_ENV),
        help=f"SQLAlchemy database URL (default: ${DB_URL_ENV})",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="read settings from FILE: one 'name = value' a line, # for comments",
    )
    parser.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        dest="settings",
        metavar="NAME=VALUE",
        help="a setting (deadline=2s, batch_size=1000, hooks=pkg.mod:hook, ...); repeatable",
    )


def settings_of(args: argparse.Namespace, **changes: object) -> Settings:
    """The settings ``args`` give (``--config``, then ``--set``), with ``changes`` over them."""
    options: dict[str, str] = {}
    if args.config is not None:
        options.update(_read_config(args.config))
    options.update(args.settings)
    settings = Settings.from_strings(options)
    return settings.replace(**changes) if changes else settings


def _read_config(path: Path) -> dict[str, str]:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"--config {path}: {first_line(exc)}") from None
    options: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals or not name.strip():
            raise CommandError(f"{path}:{number}: not 'name = value': {line!r}")
        options[name.strip()] = value.strip()
    return options


@contextmanager
def toolkit(
    args: argparse.Namespace, *, need_tables: bool = True, **changes: object
) -> Iterator[Toolkit]:
    """A :class:`~tasktoolkit.Toolkit` on ``--db-url`` with the settings of ``args``.

    Its engine has connected once (and, with ``need_tables``, has the toolkit's
    tables); it is disposed of at the end.

    :param changes: settings a command's own options set (``batch_size``).
    """
    settings = settings_of(args, **changes)
    engine = _connect(args.db_url, need_tables=need_tables)
    # Ctrl-C may land while the pool resets a connection the interrupted session gave
    # back: the pool logs that with a traceback before the interrupt goes on to main,
    # which says "interrupted" once. Only this engine's pool, only while the command runs.
    logged = engine.pool.logger  # a Logger, or SQLAlchemy's wrapper of one (echo_pool)
    pool_log = logged if isinstance(logged, logging.Logger) else logged.logger
    pool_log.addFilter(_not_an_interrupt)
    try:
        yield Toolkit(engine, settings)
    finally:
        engine.dispose()
        pool_log.removeFilter(_not_an_interrupt)


def _not_an_interrupt(record: logging.LogRecord) -> bool:
    """A log filter: drop a record of a Ctrl-C, or of an error raised while one unwound."""
    return not (record.exc_info and interrupted(record.exc_info[1]))


def interrupted(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a Ctrl-C (any error that is no ``Exception``), or was raised while
    one was being handled (a rollback that failed as the interrupted session unwound)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if not isinstance(exc, Exception):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


#: The extra that installs the driver of a backend (its default one, as the docs use it).
_DRIVER_EXTRAS = {
    "postgresql": ("postgresql", "postgresql+psycopg://"),
    "mysql": ("mysql", "mysql+pymysql://"),
    "mariadb": ("mysql", "mariadb+pymysql://"),
}


def _install_hint(backend: str) -> str:
    """``; pip install 'tasktoolkit[postgresql]' ...`` for a backend with an extra."""
    if backend not in _DRIVER_EXTRAS:
        return ""
    extra, scheme = _DRIVER_EXTRAS[backend]
    return f"; pip install 'tasktoolkit[{extra}]' (its driver, for {scheme} URLs)"


def _connect(url: str | None, *, need_tables: bool) -> Engine:
    """An engine on ``url`` that has connected once (and, optionally, has our tables).

    A new SQLite file is made only when no tables are needed (``db upgrade``).
    """
    if not url:
        raise CommandError(f"no database: pass --db-url or set ${DB_URL_ENV}")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CommandError(f"{url!r} is not a database URL") from None
    except ValueError as exc:  # a port that is not a number, ...
        raise CommandError(f"{url!r} is not a database URL: {first_line(exc)}") from None
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
    except NoSuchModuleError as exc:
        raise CommandError(f"cannot use {shown}: {first_line(exc)}") from None
    except ImportError as exc:  # the dialect is there, its driver is not
        raise CommandError(
            f"cannot use {shown}: {first_line(exc)}{_install_hint(parsed.get_backend_name())}"
        ) from None
    try:
        with engine.connect() as conn:
            has_tables = inspect(conn).has_table(Task.__tablename__)
    except DBAPIError as exc:
        engine.dispose()
        raise CommandError(f"cannot connect to {shown}: {first_line(exc.orig)}") from None
    if need_tables and not has_tables:
        engine.dispose()
        raise CommandError(
            f"{shown} has no tasktoolkit tables; run: {PROG} db upgrade --db-url URL"
        )
    return engine
