"""Running the toolkit's own migrations, beside (not inside) the host's history.

The toolkit's revisions live in this package's ``versions/`` directory, carry
the branch label ``tasktoolkit`` and record themselves in a version table of
their own, ``tasktoolkit_alembic_version``. So the host app keeps its own
Alembic history and ``alembic_version`` untouched, and a new toolkit release
never adds a second head to it.

:func:`upgrade` drives Alembic directly rather than through ``env.py`` and
``alembic.command``: those install the ``alembic.context`` module proxy and
remove it when done, which would pull it from under a host ``env.py`` that
calls :func:`upgrade` before running its own revisions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import MetaData, Table, create_engine
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.sql.elements import False_, True_
from sqlalchemy.sql.schema import Column, DefaultClause

from tasktoolkit.errors import InvalidRevisionError

if TYPE_CHECKING:
    from typing import TextIO

__all__ = [
    "BRANCH_LABEL",
    "SCRIPT_LOCATION",
    "VERSION_TABLE",
    "Bind",
    "alembic_config",
    "check_revision",
    "compare_server_default",
    "current",
    "downgrade",
    "environment_options",
    "heads",
    "include_name",
    "upgrade",
]

#: Where the toolkit's ``env.py`` and ``versions/`` live (its ``script_location``).
SCRIPT_LOCATION = os.path.dirname(os.path.abspath(__file__))
#: The table recording which toolkit revision a database is at.
VERSION_TABLE = "tasktoolkit_alembic_version"
#: The branch label of the toolkit's revisions: ``tasktoolkit@head``.
BRANCH_LABEL = "tasktoolkit"

_RELATIVE = re.compile(r"[+-]\d+\Z")

#: What :func:`upgrade` and friends accept as a database.
Bind = Engine | Connection | URL | str


def alembic_config(*, output: TextIO | None = None) -> Config:
    """An Alembic :class:`~alembic.config.Config` for the toolkit's own history.

    For Alembic commands this module does not wrap, such as
    ``alembic.command.history(alembic_config(), verbose=True)``.

    :param output: where Alembic writes its messages.
    """
    cfg = Config(output_buffer=output)
    # ConfigParser interpolation would read a "%" in an install path.
    cfg.set_main_option("script_location", SCRIPT_LOCATION.replace("%", "%%"))
    cfg.set_main_option("version_table", VERSION_TABLE)
    return cfg


def environment_options() -> dict[str, Any]:
    """``configure()`` options of the toolkit's history (for its ``env.py`` and :func:`upgrade`)."""
    from tasktoolkit.orm._records import metadata

    return {
        "target_metadata": metadata,
        "version_table": VERSION_TABLE,
        "include_name": _only_toolkit_tables,
        "compare_server_default": compare_server_default,
        # MariaDB cannot roll DDL back: a transaction per revision leaves a
        # failed upgrade at the last revision that completed, and recorded.
        "transaction_per_migration": True,
    }


def _only_toolkit_tables(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
    # The toolkit's history owns its own tables and nothing else in the database.
    if type_ == "table":
        return bool(name) and str(name).startswith("tasktoolkit_") and name != VERSION_TABLE
    return True


@contextmanager
def _connected(bind: Bind) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
        return
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            yield conn
        return
    engine = create_engine(_url_of(bind))
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _url_of(bind: Bind) -> URL | str:
    if isinstance(bind, Connection):
        return bind.engine.url
    if isinstance(bind, Engine):
        return bind.url
    if not isinstance(bind, (URL, str)):
        raise TypeError(f"expected an Engine, a Connection, a URL or a str, got {bind!r}")
    return bind


def check_revision(revision: str, *, down: bool = False, sql: bool = False) -> None:
    """Refuse a ``revision`` that :func:`upgrade` (``down``: :func:`downgrade`) would refuse,
    without connecting to anything: call it before making a database (a new SQLite file).

    Relative steps (``+1``, ``-1``) resolve only against a database: they pass.

    :raises InvalidRevisionError: for a revision the toolkit does not have.
    """
    _resolved(ScriptDirectory.from_config(alembic_config()), revision, down=down, sql=sql)


def _resolved(
    script: ScriptDirectory, revision: str, *, down: bool, sql: bool
) -> tuple[str | None, str]:
    """``(starting_rev, revision)`` of a checked ``revision`` (a range only with ``sql``)."""
    if not isinstance(revision, str) or not revision:
        raise InvalidRevisionError(f"revision must be a non-empty string, got {revision!r}")
    starting_rev: str | None = None
    if ":" in revision:
        if not sql:
            raise InvalidRevisionError(f"a range {revision!r} is only for SQL output (sql=True)")
        starting_rev, revision = revision.split(":", 1)
    elif sql and down:
        raise InvalidRevisionError("downgrade with sql=True needs '<from>:<to>'")
    for rev in (starting_rev, revision):
        # Resolved before connecting, so that a typo writes nothing (not even the
        # version table); relative steps ("+1", "-1") resolve only against a database.
        if rev is not None and not _RELATIVE.search(rev):
            try:
                script.revision_map.get_revisions(rev)
            except RevisionError as exc:
                raise InvalidRevisionError(f"toolkit migrations: {exc}") from exc
    return starting_rev, revision


def _run(bind: Bind, revision: str, *, down: bool, sql: bool, output: TextIO | None) -> None:
    cfg = alembic_config(output=output)
    script = ScriptDirectory.from_config(cfg)
    starting_rev, revision = _resolved(script, revision, down=down, sql=sql)

    def steps(rev: Any, context: MigrationContext) -> Any:
        if down:
            return script._downgrade_revs(revision, rev)
        return script._upgrade_revs(revision, rev)

    env = EnvironmentContext(
        cfg, script, fn=steps, as_sql=sql, starting_rev=starting_rev, destination_rev=revision
    )
    try:
        if sql:
            env.configure(
                url=_url_of(bind), literal_binds=True, output_buffer=output, **environment_options()
            )
            with env.begin_transaction():
                env.run_migrations()
            return
        with _connected(bind) as conn:
            outer = conn.in_transaction()
            env.configure(connection=conn, **environment_options())
            with env.begin_transaction():
                env.run_migrations()
            if down and env.get_context().get_current_revision() is None:
                # At base nothing of the toolkit's is left: its version table
                # goes too, so a downgraded database holds only the host's.
                Table(VERSION_TABLE, MetaData()).drop(conn, checkfirst=True)
            # Reading the version table may have begun a transaction that no
            # revision committed; leave the connection as it was given.
            if not outer and conn.in_transaction():
                conn.commit()
    except (CommandError, RevisionError) as exc:
        raise InvalidRevisionError(f"toolkit migrations: {exc}") from exc


def upgrade(
    bind: Bind, revision: str = "head", *, sql: bool = False, output: TextIO | None = None
) -> None:
    """Bring the toolkit's tables up to ``revision`` (the newest by default).

    Safe to run at every deployment: a database already there is left alone.
    Run it before the host's own revisions, which add columns to
    ``tasktoolkit_tasks``; a host ``env.py`` calls it first (docs/migrations.md).

    :param bind: an engine, a URL, or a connection. A connection already in a
        transaction is used as is and the caller commits; otherwise each
        revision commits.
    :param revision: a toolkit revision id, ``head`` or ``tasktoolkit@head``.
    :param sql: write the SQL to ``output`` (stdout when ``None``) instead of
        running it; nothing is connected, ``bind`` only names the dialect.
        ``revision`` may then be a range, ``"<from>:<to>"``.
    :raises InvalidRevisionError: for a revision the toolkit does not have.

    Example::

        from tasktoolkit.orm import migrations
        migrations.upgrade("postgresql+psycopg://app@db/app")
    """
    _run(bind, revision, down=False, sql=sql, output=output)


def downgrade(
    bind: Bind, revision: str = "base", *, sql: bool = False, output: TextIO | None = None
) -> None:
    """Take the toolkit's tables back to ``revision``; ``base`` drops them all,
    its version table included.

    Downgrade the host's revisions that added resource columns first. The
    parameters are those of :func:`upgrade`; with ``sql=True``, ``revision``
    must be a range, ``"<from>:<to>"``.
    """
    _run(bind, revision, down=True, sql=sql, output=output)


def current(bind: Bind) -> str | None:
    """The toolkit revision the database is at, or ``None`` before the first upgrade."""
    with _connected(bind) as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def heads() -> tuple[str, ...]:
    """The newest toolkit revision(s) this release ships (one, normally)."""
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def include_name(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
    """An ``include_name`` hook for a host's Alembic ``env.py``.

    Hides the toolkit's version table from the host's autogenerate and
    ``alembic check``, which would otherwise offer to drop it::

        context.configure(..., include_name=migrations.include_name)
    """
    return not (type_ == "table" and name == VERSION_TABLE)


def compare_server_default(
    context: MigrationContext,
    inspected_column: Column[Any],
    metadata_column: Column[Any],
    inspected_default: str | None,
    metadata_default: str | None,
    rendered_metadata_default: str | None,
) -> bool | None:
    """A ``compare_server_default`` hook that knows MariaDB keeps ``false()`` as ``0``.

    Alembic reports ``server_default=false()`` on a MariaDB ``BOOL`` column
    (stored as ``'0'``) as changed on every run. Every other default is left to
    Alembic (``None``). Pass it as ``context.configure(compare_server_default=...)``.
    """
    default = metadata_column.server_default
    if not isinstance(default, DefaultClause) or inspected_default is None:
        return None
    if not isinstance(default.arg, (False_, True_)):
        return None
    found = inspected_default.strip("'\"() ").lower()
    expected = ("1", "true") if isinstance(default.arg, True_) else ("0", "false")
    return found not in expected
