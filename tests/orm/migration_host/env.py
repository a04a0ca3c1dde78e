"""The example host's Alembic environment: the integration docs/migrations.md recommends.

Two histories, one command: this ``env.py`` first brings the toolkit's tables
to the installed release's head (in their own version table), then runs the
host's revisions, which add resource columns to ``tasktoolkit_tasks``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from tasktoolkit import orm
from tasktoolkit.orm import migrations as tasktoolkit_migrations
from tests.orm.migration_host.models import Base

config = context.config
url = os.environ.get("MIGRATION_HOST_DATABASE_URL") or config.get_main_option("sqlalchemy.url")

# The toolkit's tables are compared too: the resource columns that this app's
# models add to tasktoolkit_tasks are this history's to create.
target_metadata = [Base.metadata, orm.metadata]
options = {
    "target_metadata": target_metadata,
    "include_name": tasktoolkit_migrations.include_name,
    "compare_server_default": tasktoolkit_migrations.compare_server_default,
}

if context.is_offline_mode():
    # Offline, print the toolkit's SQL first: tasktoolkit.orm.migrations.upgrade(url, sql=True).
    context.configure(url=url, literal_binds=True, **options)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(str(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        tasktoolkit_migrations.upgrade(connection)
        context.configure(connection=connection, **options)  # type: ignore[arg-type]
        with context.begin_transaction():
            context.run_migrations()
