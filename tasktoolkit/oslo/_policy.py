"""oslo.policy: the toolkit's authorization hook answered by an ``Enforcer``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oslo_config import cfg
from oslo_policy import policy

from tasktoolkit import caller as rules
from tasktoolkit.caller import Caller

__all__ = ["PolicyAuthorizer", "list_rules"]

# keystone's default roles (admin implies member implies reader) and scopes.
ADMIN = "role:admin"
SYSTEM_READER = "role:reader and system_scope:all"
PROJECT_READER = "role:reader and project_id:%(project_id)s"
PROJECT_MEMBER = "role:member and project_id:%(project_id)s"
_READ = f"({ADMIN}) or ({SYSTEM_READER}) or ({PROJECT_READER})"
_WRITE = f"({ADMIN}) or ({PROJECT_MEMBER})"
_SCOPES = ["system", "project"]


def _rule(name: str, check: str, description: str, method: str, path: str) -> Any:
    return policy.DocumentedRuleDefault(
        name=name,
        check_str=check,
        description=description,
        operations=[{"method": method, "path": path}],
        scope_types=_SCOPES,
    )


#: Each rule: its name, its default check, what it allows, and the request it guards.
_T = "/{collection}/{resource_id}/tasks/{task_id}"
_O = "/operations/{operation_id}"
_RULES = (
    (rules.TASKS_LIST, _READ, "List tasks.", "GET", "/tasks"),
    (rules.TASKS_SHOW, _READ, "Show a task.", "GET", "/tasks/{task_id}"),
    (rules.TASKS_SHOW_HOST, ADMIN, "See tasks' hosts and tracebacks.", "GET", "/tasks/{task_id}"),
    (rules.TASKS_CANCEL, _WRITE, "Cancel a task.", "POST", f"{_T}/cancel"),
    (rules.OPERATIONS_LIST, _READ, "List operations.", "GET", "/operations"),
    (rules.OPERATIONS_SHOW, _READ, "Show an operation.", "GET", _O),
    (rules.OPERATIONS_CANCEL, _WRITE, "Cancel an operation's tasks.", "POST", f"{_O}/cancel"),
)


def list_rules() -> list[Any]:
    """The toolkit's default rules, for ``Enforcer.register_defaults``.

    Also the ``oslo.policy.policies`` entry point ``tasktoolkit``, so
    ``oslopolicy-sample-generator --namespace tasktoolkit`` writes them out.

    - a project reader sees its project's tasks and operations, a member cancels them;
    - a system-scoped reader sees every project's, read only;
    - an admin does everything, and alone sees hosts and tracebacks.
    """
    return [_rule(*row) for row in _RULES]


class PolicyAuthorizer:
    """``authorize(caller, rule, target)`` answered by oslo.policy.

    :param enforcer: the host's ``oslo_policy.policy.Enforcer`` (its policy file
        may override any rule); default: a new one on ``conf``. The toolkit's
        defaults (:func:`list_rules`) are registered on it.
    :param conf: the parsed ``oslo_config.cfg.ConfigOpts`` of a new enforcer
        (its ``[oslo_policy]`` section names the policy file); default: an empty
        one, so only the defaults apply.

    A target value that is ``None`` (``project_id`` of "every project") is left
    out, so ``project_id:%(project_id)s`` does not hold for it.

    Example::

        enforcer = policy.Enforcer(CONF)
        mount(mapper, ..., caller_getter=oslo_caller, authorize=PolicyAuthorizer(enforcer))
    """

    def __init__(self, enforcer: Any | None = None, *, conf: Any | None = None) -> None:
        if enforcer is None:
            if conf is None:
                conf = cfg.ConfigOpts()
                conf([], default_config_files=[])  # no file: the defaults only
            enforcer = policy.Enforcer(conf)
        registered = enforcer.registered_rules
        enforcer.register_defaults([r for r in list_rules() if r.name not in registered])
        self.enforcer = enforcer

    def __call__(self, caller: Caller, rule: str, target: Mapping[str, Any]) -> bool:
        creds: dict[str, Any] = {
            "project_id": caller.project_id,
            "user_id": caller.user_id,
            "roles": sorted(caller.roles),
            "system_scope": caller.system_scope,
        }
        kept = {key: value for key, value in target.items() if value is not None}
        return bool(self.enforcer.enforce(rule, kept, creds, do_raise=False))
