"""oslo.config: the toolkit's options in a ``[tasktoolkit]`` group, and a toolkit from them.

The options are the one declared list (:data:`tasktoolkit.settings.OPTIONS`),
registered as text options and read back through
:meth:`~tasktoolkit.settings.Settings.from_strings`, so a value means the same
in ``nova.conf`` as in a Paste filter or on the command line (durations
included: ``deadline = 2s``). :func:`list_opts` is the ``oslo.config.opts``
entry point ``tasktoolkit``: ``oslo-config-generator --namespace tasktoolkit``
prints them.

The database is the service's own ``[database] connection``. Pass the
service's engine where it has one (``context_manager.writer.get_engine()`` of
its oslo.db transaction context): the toolkit then shares its pool.

Example::

    register_opts(CONF)
    CONF(["--config-file", "/etc/myservice/myservice.conf"])
    toolkit = toolkit_from_config(CONF, engine=main_context_manager.writer.get_engine())
"""

from __future__ import annotations

from typing import Any

from oslo_config import cfg
from sqlalchemy.engine import Engine

from tasktoolkit.errors import ConfigurationError
from tasktoolkit.settings import OPTIONS, Settings
from tasktoolkit.toolkit import Toolkit

__all__ = ["GROUP", "list_opts", "register_opts", "settings_from_config", "toolkit_from_config"]

#: The configuration group of the toolkit's options.
GROUP = "tasktoolkit"


def _opts() -> list[cfg.Opt]:
    defaults = Settings().as_strings()
    return [
        cfg.StrOpt(option.name, default=defaults[option.name], help=option.help)
        for option in OPTIONS
    ]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The ``[tasktoolkit]`` options, for ``oslo-config-generator --namespace tasktoolkit``."""
    return [(GROUP, _opts())]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the ``[tasktoolkit]`` options on ``conf`` (once; again is a no-op)."""
    conf.register_opts(_opts(), group=GROUP)


def settings_from_config(conf: cfg.ConfigOpts, **overrides: Any) -> Settings:
    """The :class:`~tasktoolkit.Settings` the ``[tasktoolkit]`` group of ``conf`` says.

    :param overrides: values set in code, over the file's (objects the file
        cannot name: ``hooks=[...]``).
    :raises ConfigurationError: a value of the file that cannot be (named in the message).
    """
    register_opts(conf)
    group = conf[GROUP]
    try:
        settings = Settings.from_strings({o.name: group[o.name] for o in OPTIONS})
    except ConfigurationError as exc:
        raise type(exc)(f"[{GROUP}] {exc}") from None
    return settings.replace(**overrides) if overrides else settings


def toolkit_from_config(
    conf: cfg.ConfigOpts | None = None, *, engine: Engine | None = None, **overrides: Any
) -> Toolkit:
    """A :class:`~tasktoolkit.Toolkit` from the service's configuration.

    :param conf: the parsed configuration (default: oslo.config's global ``CONF``).
    :param engine: the service's engine (shared); default: one made from the
        service's ``[database] connection``, by oslo.db when it is installed.
    :param overrides: settings set in code, over the file's.
    :raises ConfigurationError: no engine and no ``[database] connection``.
    """
    conf = cfg.CONF if conf is None else conf
    settings = settings_from_config(conf, **overrides)
    if engine is None:
        engine = _engine_of(conf)
    return Toolkit(engine, settings)


def _engine_of(conf: cfg.ConfigOpts) -> Engine:
    connection = _database_connection(conf)
    try:
        from oslo_db.sqlalchemy import engines
    except ImportError:
        from sqlalchemy import create_engine

        return create_engine(connection)
    found: Engine = engines.create_engine(connection)
    return found


def _database_connection(conf: cfg.ConfigOpts) -> str:
    try:
        connection = conf.database.connection
    except cfg.NoSuchOptError:
        connection = None
    except cfg.NoSuchGroupError:
        connection = None
    if not connection:
        raise ConfigurationError(
            "no database: set [database] connection, or pass the service's engine"
        )
    return str(connection)
