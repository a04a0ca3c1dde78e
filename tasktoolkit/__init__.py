"""tasktoolkit: a task API for WSGI + SQLAlchemy services.

Three parts, used together:

* :mod:`tasktoolkit.middleware`: request ids and one *operation* per mutating request;
* :mod:`tasktoolkit.orm`: task and operation records, and the resource mixin that spawns tasks;
* :mod:`tasktoolkit.endpoints`: the ``/<collection>/<id>/tasks``, ``/tasks`` and
  ``/operations`` endpoints, mounted on a Routes mapper.
"""

from __future__ import annotations

__version__ = "0.1.0"
