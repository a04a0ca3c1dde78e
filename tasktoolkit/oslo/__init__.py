"""Bridges to the oslo libraries OpenStack services already run (extra ``[oslo]``).

- :func:`oslo_caller`: the caller from oslo.context's ``RequestContext.from_environ``,
  keystone's system scope included;
- :class:`OsloContextFilter` and :func:`job_context`: oslo.log lines of the API
  and of workers carry the right request, global request, user and project;
- :class:`PolicyAuthorizer` and :func:`list_rules`: the toolkit's authorization
  hook answered by oslo.policy, with documented default rules;
- :func:`list_opts`, :func:`settings_from_config` and :func:`toolkit_from_config`:
  the toolkit's options in the service's configuration file (``[tasktoolkit]``),
  and its database from ``[database] connection``.

Importing this package imports oslo.context, oslo.log's needs and oslo.policy;
nothing else in the toolkit imports it.

Example::

    from tasktoolkit.oslo import PolicyAuthorizer, oslo_caller

    settings = Settings(caller_getter=oslo_caller, authorize=PolicyAuthorizer())
    Toolkit(engine, settings).mount(mapper, collections={"ports": Port})
"""

from __future__ import annotations

from tasktoolkit.oslo._config import (
    list_opts,
    register_opts,
    settings_from_config,
    toolkit_from_config,
)
from tasktoolkit.oslo._context import OsloContextFilter, job_context, oslo_caller, oslo_context
from tasktoolkit.oslo._policy import PolicyAuthorizer, list_rules

__all__ = [
    "OsloContextFilter",
    "PolicyAuthorizer",
    "job_context",
    "list_opts",
    "list_rules",
    "oslo_caller",
    "oslo_context",
    "register_opts",
    "settings_from_config",
    "toolkit_from_config",
]
