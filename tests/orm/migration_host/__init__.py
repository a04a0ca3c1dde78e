"""An example host app with Alembic migrations of its own, for tests/orm/test_migrations.py.

Import it only in a process of its own (the test runs it in a subprocess): its
resource types (``volume``, ``snapshot``) add columns to the process-wide tasks
table, and the comparison must see exactly the toolkit and this host.
"""
