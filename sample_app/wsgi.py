"""The sample's :class:`~tasktoolkit.Toolkit` for servers: the one a paste pipeline names.

The database is the environment's ``SAMPLE_APP_DB_URL`` (default
``sqlite:///sample_app.db``), read when this module is first imported; the
paste pipeline (``api-paste.ini``) carries no URL: both of its filters and its
app use :data:`toolkit` (one engine, one pool)::

    SAMPLE_APP_DB_URL=postgresql+psycopg://postgres@127.0.0.1/sample \\
        gunicorn --paste sample_app/api-paste.ini --bind 127.0.0.1:8080
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sample_app.app import make_router, sample_settings
from sample_app.engine import create_sample_engine
from tasktoolkit import Toolkit, orm

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["DB_URL_VARIABLE", "DEFAULT_DB_URL", "app_factory", "toolkit"]

#: The environment variable naming the sample's database.
DB_URL_VARIABLE = "SAMPLE_APP_DB_URL"
DEFAULT_DB_URL = "sqlite:///sample_app.db"

#: The sample's toolkit: its engine on ``SAMPLE_APP_DB_URL``, the sample's settings.
toolkit = Toolkit(
    create_sample_engine(os.environ.get(DB_URL_VARIABLE) or DEFAULT_DB_URL), sample_settings()
)

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def app_factory(global_conf: Mapping[str, str], **local_conf: str) -> WSGIApplication:
    """``paste.app_factory``: the API without middleware (the paste pipeline adds it), on
    :data:`toolkit`'s engine.

    Options of the ``[app:...]`` section (``global_conf`` is not read):

    :param create_tables: ``true`` (default) creates missing tables at start; set
        ``false`` where migrations create them (and with several gunicorn
        workers on a fresh database, which would race to create them).
    :param start_timeout: seconds within which an agent must start a task.
    """
    conf = dict(local_conf)
    start_timeout = conf.pop("start_timeout", "").strip() or None
    create = conf.pop("create_tables", "true").strip().lower()
    if create not in _TRUE | _FALSE:
        raise ValueError(f"sample_app: create_tables must be true or false, got {create!r}")
    if conf:
        raise ValueError(f"sample_app: unknown option {sorted(conf)[0]!r}")
    seconds = None if start_timeout is None else float(start_timeout)
    if seconds is not None and not 1 <= seconds <= 86400:
        raise ValueError(f"sample_app: start_timeout must be 1 to 86400 seconds, got {seconds}")
    if create in _TRUE:
        orm.create_all(toolkit.engine)
    return make_router(toolkit, start_timeout=seconds)
