"""The endpoints as gunicorn serves them in the tests: ``tests.endpoints.gunicorn_app:app``.

The database is ``TASKTOOLKIT_TEST_DB_URL``'s (the test's own, its schema made);
every setting is the default, so a test sees what a host gets.
"""

from __future__ import annotations

import os

import routes

from tasktoolkit import Toolkit
from tasktoolkit.endpoints import Router
from tests.endpoints.conftest import COLLECTIONS

toolkit = Toolkit(os.environ["TASKTOOLKIT_TEST_DB_URL"])
mapper = routes.Mapper()
toolkit.mount(mapper, collections=COLLECTIONS)
app = Router(mapper)
