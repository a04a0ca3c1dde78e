"""``tasktoolkit db upgrade``: run the toolkit's migrations.

Example::

    tasktoolkit db upgrade --db-url postgresql+psycopg://app@db/app
"""

from __future__ import annotations

import argparse
from typing import Any

from tasktoolkit.commands._common import EXIT_OK, Parser, command, toolkit

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Add ``db`` and its ``upgrade`` to ``commands`` (the main parser's subparsers)."""
    db = commands.add_parser("db", help="Database schema.", description="Database schema.")
    db_commands = db.add_subparsers(dest="db_command", required=True, parser_class=Parser)
    about = "Run the toolkit's migrations."
    upgrade = command(db_commands, "upgrade", about, upgrade_run)
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")


def upgrade_run(args: argparse.Namespace) -> int:
    from tasktoolkit.orm import migrations

    # A revision the toolkit does not have is refused before anything is made (a new
    # SQLite file is made by connecting to it).
    migrations.check_revision(args.revision)
    with toolkit(args, need_tables=False) as kit:
        migrations.upgrade(kit.engine, args.revision)
        print(f"database is at {args.revision} ({migrations.current(kit.engine) or 'empty'})")
    return EXIT_OK
