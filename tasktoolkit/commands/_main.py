"""The ``tasktoolkit`` command line: its parser, one module per command, and its exit codes.

Bad input or a database that cannot be reached ends a command with exit
status 1 and one line on standard error saying why; nothing is written.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from tasktoolkit import __version__
from tasktoolkit.commands import _db, _health, _purge, _reap, _stats, _watch, _workers
from tasktoolkit.commands._common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    PROG,
    CommandError,
    Parser,
    first_line,
)
from tasktoolkit.errors import TaskToolkitError

__all__ = ["build_parser", "main"]


def build_parser() -> Parser:
    """The parser of every command."""
    parser = Parser(prog=PROG, description="Maintain tasktoolkit's tasks and operations.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in (_purge, _reap, _db, _watch, _stats, _workers, _health):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (CommandError, TaskToolkitError, ValueError) as exc:
        return _fail(str(exc))
    except DBAPIError as exc:
        return _fail(f"database error: {first_line(exc.orig)}")
    except SQLAlchemyError as exc:
        return _fail(f"database error: {first_line(exc)}")
    except KeyboardInterrupt:
        _fail("interrupted")
        return EXIT_INTERRUPTED


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_ERROR
