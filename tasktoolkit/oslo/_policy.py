"""oslo.policy: the toolkit's authorization hook answered by an ``Enforcer``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oslo_config import cfg
from oslo_policy import policy

from tasktoolkit.caller import ACT, ADMIN, READ, RULES, Caller, Rule
from tasktoolkit.endpoints import ENDPOINTS

__all__ = ["PolicyAuthorizer", "list_rules"]

# keystone's default roles (admin implies member implies reader) and scopes.
_ADMIN = "role:admin"
_SYSTEM_READER = "role:reader and system_scope:all"
_PROJECT_READER = "role:reader and project_id:%(project_id)s"
_PROJECT_MEMBER = "role:member and project_id:%(project_id)s"
#: The default check of each kind of rule (:attr:`tasktoolkit.caller.Rule.access`).
_CHECKS = {
    READ: f"({_ADMIN}) or ({_SYSTEM_READER}) or ({_PROJECT_READER})",
    ACT: f"({_ADMIN}) or ({_PROJECT_MEMBER})",
    ADMIN: _ADMIN,
}
_SCOPES = ["system", "project"]


def _default(rule: Rule) -> Any:
    """``rule``'s default, documented with every request of the endpoint table that asks it."""
    operations: list[policy.Operation] = [
        {"method": method, "path": endpoint.path}
        for endpoint in ENDPOINTS
        if rule in endpoint.rules
        for method in endpoint.methods
        if method != "HEAD"
    ]
    return policy.DocumentedRuleDefault(
        name=str(rule),
        check_str=_CHECKS[rule.access],
        description=rule.description,
        operations=operations,
        scope_types=_SCOPES,
    )


def list_rules() -> list[Any]:
    """The toolkit's default rules, for ``Enforcer.register_defaults``.

    Also the ``oslo.policy.policies`` entry point ``tasktoolkit``, so
    ``oslopolicy-sample-generator --namespace tasktoolkit`` writes them out.
    Each rule's check follows who passes it (:attr:`tasktoolkit.caller.Rule.access`);
    the requests it guards are the endpoint table's.

    - a project reader sees its project's tasks and operations, a member cancels them;
    - a system-scoped reader sees every project's, read only;
    - an admin does everything, and alone sees hosts and tracebacks.
    """
    return [_default(rule) for rule in RULES]


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
        settings = Settings(caller_getter=oslo_caller, authorize=PolicyAuthorizer(enforcer))
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
