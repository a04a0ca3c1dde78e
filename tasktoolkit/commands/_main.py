"""The ``tasktoolkit`` command line: its parser, one module per command, and its exit codes.

Bad input or a database that cannot be reached ends a command with exit
status 1 and one line on standard error saying why; nothing is written.
Ctrl-C ends it with 130, without a traceback; so does a reader that goes away
(``| head``), with 1 and nothing said.

Every command is declared once, in :data:`COMMANDS`: a module whose
``add_parser(commands)`` adds it (and its own subcommands). With argcomplete
installed, the parser completes in the shell (``eval "$(register-python-argcomplete
tasktoolkit)"``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType, ModuleType

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from tasktoolkit import __version__
from tasktoolkit.commands import _db, _health, _purge, _reap, _records, _stats, _watch, _workers
from tasktoolkit.commands._common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    PROG,
    CommandError,
    Parser,
    first_line,
    interrupted,
)
from tasktoolkit.errors import TaskToolkitError

__all__ = ["COMMANDS", "build_parser", "main"]

#: Every command, in the order ``--help`` lists them: each module's ``add_parser(commands)``
#: adds its own (``_records`` adds ``tasks`` and ``operations``, with their actions).
COMMANDS: tuple[ModuleType, ...] = (
    _purge,
    _reap,
    _db,
    _watch,
    _records,
    _stats,
    _workers,
    _health,
)


def build_parser() -> Parser:
    """The parser of every command."""
    parser = Parser(prog=PROG, description="Maintain tasktoolkit's tasks and operations.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def _complete(parser: Parser) -> None:
    """Answer the shell's completion request (``$_ARGCOMPLETE``), when argcomplete is there:
    it prints the choices and exits; otherwise nothing happens."""
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        parser = build_parser()
        _complete(parser)
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        return _interrupted()
    with _ctrl_c_seen() as seen:
        try:
            status = int(args.run(args))
            sys.stdout.flush()  # a reader that went away (``| head``) is met here, not at exit
            return status
        except BrokenPipeError:
            _stdout_to_devnull()
            return EXIT_ERROR
        except KeyboardInterrupt:
            return _interrupted()
        except (CommandError, TaskToolkitError, ValueError, SQLAlchemyError) as exc:
            # Ctrl-C in the middle of a query can leave the connection mid-reply: the
            # rollback as the session unwinds then fails, and its error takes the place of
            # the interrupt.
            if seen or interrupted(exc):
                return _interrupted()
            return _error(exc)


def _error(exc: Exception) -> int:
    """One line of an error, as the command line says it."""
    if isinstance(exc, DBAPIError):
        return _fail(f"database error: {first_line(exc.orig)}")
    if isinstance(exc, SQLAlchemyError):
        return _fail(f"database error: {first_line(exc)}")
    return _fail(str(exc))


@contextmanager
def _ctrl_c_seen() -> Iterator[list[bool]]:
    """While a command runs in the main thread under Python's own SIGINT handler: a list
    that is not empty once Ctrl-C was pressed (it still raises ``KeyboardInterrupt``)."""
    seen: list[bool] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield seen  # a host's own handler (or SIG_IGN) is left alone
        return

    def pressed(signum: int, frame: FrameType | None) -> None:
        seen.append(True)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, pressed)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _stdout_to_devnull() -> None:
    """Nothing more can be written: what is left in the buffer goes nowhere, so that
    Python's flush at exit does not print a traceback of its own."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _interrupted() -> int:
    print(f"{PROG}: error: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_ERROR
