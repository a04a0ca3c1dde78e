# PYTHON_ARGCOMPLETE_OK  (argcomplete's global completion looks for this mark here)
"""The ``tasktoolkit`` command: ``tasks`` and ``operations`` (``list``, ``show``,
``cancel``), ``watch``, ``purge``, ``reap``, ``db upgrade``, ``stats``, ``workers``,
``health`` (``docs/cli.md``).

One module per command; each builds its :class:`~tasktoolkit.Toolkit` from
``--db-url`` (or ``$TASKTOOLKIT_DB_URL``) and the toolkit's settings, read as
text from the one declared list of options: ``--config FILE`` (``name = value``
lines) and ``--set NAME=VALUE`` (repeatable). Durations take the one form
(``90s``, ``15m``, ``1d12h``, or seconds). ``tasks`` and ``operations`` may ask
a service over HTTP instead (``--url``, ``--os-cloud``), and print with
``-f table|json|value|csv`` and ``-c COLUMN``.

Exit status: 0 done; 1 an error (one line on standard error); 2 bad usage;
3 (``watch``) the operation ended ``failed`` or ``cancelled``; 130 interrupted.

Examples::

    tasktoolkit tasks list --db-url sqlite:///app.db --state failed -f value -c id -c error
    tasktoolkit operations cancel req-8c5a... --os-cloud devstack --os-service-type network
    tasktoolkit purge --db-url postgresql+psycopg://app@db/app --older-than 1d
    tasktoolkit purge --db-url sqlite:///app.db --dry-run
    tasktoolkit reap --db-url mysql+pymysql://app@db/app --models myapp.models --set deadline=2s
    tasktoolkit reap --db-url postgresql+psycopg://app@db/app --bridge myapp.tasks:bridge
    tasktoolkit db upgrade --db-url postgresql+psycopg://app@db/app
    tasktoolkit watch req-8c5a... --db-url sqlite:///app.db
    tasktoolkit watch https://api.example/operations/req-8c5a... --header "X-Auth-Token: ..."
    tasktoolkit stats --db-url postgresql+psycopg://app@db/app
    tasktoolkit workers --db-url postgresql+psycopg://app@db/app
    tasktoolkit health --db-url postgresql+psycopg://app@db/app --pid $MAINPID
"""

from __future__ import annotations

from tasktoolkit.commands._common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OPERATION_FAILED,
    EXIT_USAGE,
    CommandError,
)
from tasktoolkit.commands._main import main

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OPERATION_FAILED",
    "EXIT_USAGE",
    "CommandError",
    "main",
]
