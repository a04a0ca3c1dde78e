"""What the Paste filters read: the host's :class:`~tasktoolkit.Toolkit` and the options over it.

A filter's options are the toolkit's options (:data:`tasktoolkit.settings.OPTIONS`,
read by :meth:`Settings.from_strings <tasktoolkit.settings.Settings.from_strings>`),
plus ``toolkit = package.module:attribute`` naming the host's ``Toolkit``,
whose engine (its pool) and settings the middleware then uses: no database
URL in the pipeline, and no second engine::

    [filter:operations]
    use = egg:tasktoolkit#operations
    toolkit = myservice.wsgi:toolkit
    exclude_paths = /healthcheck

The options a filter sets are laid over the toolkit's settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, TypeGuard

from sqlalchemy.engine import Engine

from tasktoolkit.errors import ConfigurationError
from tasktoolkit.settings import Settings, resolve

__all__ = ["TOOLKIT_OPTION", "Composed", "settings_for"]


class Composed(Protocol):
    """What a filter reads of the host's :class:`~tasktoolkit.Toolkit`: its engine and settings.

    The root composes the middleware; the middleware never imports the root.
    """

    @property
    def engine(self) -> Engine: ...

    @property
    def settings(self) -> Settings: ...

#: The filter option naming the host's ``Toolkit`` (``package.module:attribute``).
TOOLKIT_OPTION = "toolkit"


def _composes(found: object) -> TypeGuard[Composed]:
    """Whether ``found`` has an engine and settings, as a ``Toolkit`` has."""
    return isinstance(getattr(found, "engine", None), Engine) and isinstance(
        getattr(found, "settings", None), Settings
    )


def _toolkit_for(local_conf: Mapping[str, str]) -> Composed | None:
    """The host's ``Toolkit`` a filter's options name, or ``None`` when they name none.

    :raises ConfigurationError: the name does not import, or has no engine and settings.
    """
    name = local_conf.get(TOOLKIT_OPTION)
    if name is None:
        return None
    found = resolve(name, TOOLKIT_OPTION)
    if not _composes(found):
        raise ConfigurationError(
            f"{TOOLKIT_OPTION}: {name.strip()!r} is not a tasktoolkit.Toolkit, but {found!r}"
        )
    return found


def settings_for(local_conf: Mapping[str, str]) -> tuple[Composed | None, Settings]:
    """The toolkit a filter's options name (if any) and the settings they make over its own.

    ``global_conf`` is never read: only the filter's own options.

    :raises ConfigurationError: an unknown option, a value that cannot be, a bad toolkit.
    """
    toolkit = _toolkit_for(local_conf)
    options = {k: v for k, v in local_conf.items() if k != TOOLKIT_OPTION}
    base = None if toolkit is None else toolkit.settings
    return toolkit, Settings.from_strings(options, base=base)
