"""tasktoolkit: a task API for WSGI + SQLAlchemy services.

One :class:`Toolkit` per database, made from an engine and one
:class:`Settings`, gives every part, wired alike:

* ``toolkit.wsgi(app)``: request ids for every request, an *operation* for every
  mutating one (:mod:`tasktoolkit.middleware`);
* ``toolkit.mount(mapper, collections=...)``: the ``/<collection>/<id>/tasks``,
  ``/tasks`` and ``/operations`` endpoints on a Routes mapper
  (:mod:`tasktoolkit.endpoints`);
* ``toolkit.worker(names)``, ``toolkit.reap()``, ``toolkit.purge()``: running
  tasks and keeping the records (:mod:`tasktoolkit.orm`, whose resource mixin
  spawns the tasks).

Example::

    from tasktoolkit import Settings, Toolkit

    toolkit = Toolkit(engine, Settings(deadline="2s"))
    app = toolkit.wsgi(app)
"""

from __future__ import annotations

from tasktoolkit.settings import Settings
from tasktoolkit.toolkit import Toolkit

__all__ = ["Settings", "Toolkit", "__version__"]

__version__ = "0.1.0"
