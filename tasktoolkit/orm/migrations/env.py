"""The Alembic environment of the toolkit's own tables (not of the host's).

Applications never run it: :func:`tasktoolkit.orm.migrations.upgrade` drives
the same history directly. It is here for the toolkit's maintainers, who write
a new revision against a scratch database brought to the current head, with no
host model imported::

    TASKTOOLKIT_DB_URL=sqlite:///scratch.db \\
        alembic -c tasktoolkit/orm/migrations/alembic.ini revision --autogenerate \\
            --rev-id tasktoolkit_0002 -m "..."
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from tasktoolkit.orm.migrations._commands import environment_options

url = os.environ.get("TASKTOOLKIT_DB_URL") or context.config.get_main_option("sqlalchemy.url")
if not url:
    raise SystemExit("set TASKTOOLKIT_DB_URL to a scratch database")

if context.is_offline_mode():
    context.configure(url=url, literal_binds=True, **environment_options())
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, **environment_options())
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
