"""Who is calling (project, user, roles, system scope), and what they may do.

The toolkit does no authentication. An authentication middleware in front of
it (keystonemiddleware, for instance) sets headers; a *caller getter* turns the
environ into a :class:`Caller`. The default reads keystonemiddleware's
``X-Project-Id``, ``X-User-Id``, ``X-Roles`` and ``OpenStack-System-Scope``.

What a caller may do is asked of one *authorization hook*,
``authorize(caller, rule, target) -> bool``, with a rule name of :data:`RULES`
and a target whose ``project_id`` is the record's project (``None``: every
project, asked before a list). :func:`default_authorize` is the default;
:mod:`tasktoolkit.oslo` has an oslo.policy one.

Example::

    def my_caller(environ):
        token = environ["my.auth.token"]
        return Caller(project_id=token.project, user_id=token.user, roles=frozenset(token.roles))

    toolkit = Toolkit(engine, Settings(caller_getter=my_caller))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from tasktoolkit.errors import InvalidCallerError

__all__ = [
    "ACT",
    "ADMIN",
    "CALLER_ID_LENGTH",
    "OPERATIONS_CANCEL",
    "OPERATIONS_LIST",
    "OPERATIONS_RETRY",
    "OPERATIONS_SHOW",
    "READ",
    "READ_RULES",
    "RULES",
    "TASKS_CANCEL",
    "TASKS_LIST",
    "TASKS_RETRY",
    "TASKS_SHOW",
    "TASKS_SHOW_HOST",
    "WORKERS_LIST",
    "Access",
    "Authorize",
    "Caller",
    "CallerGetter",
    "Rule",
    "anonymous_caller",
    "check_caller",
    "default_authorize",
    "implied_roles",
    "keystone_caller",
]

READ: Final = "read"
ACT: Final = "act"
ADMIN: Final = "admin"
Access = Literal["read", "act", "admin"]


class Rule(str):
    """A rule name the toolkit asks the authorization hook about, with its default.

    It is the name itself (a ``str``: hooks compare it as text), carrying who
    passes it by default (:attr:`access`) and what it allows
    (:attr:`description`). :func:`default_authorize` and the oslo.policy
    defaults are both read from these; which endpoint asks which rule is said
    once, in the endpoint table (:mod:`tasktoolkit.endpoints`).

    :param access: ``"read"`` (readers of the project, and system readers),
        ``"act"`` (members of the project, and system admins) or ``"admin"``
        (admins of the project, and system admins).
    """

    access: Access
    description: str

    def __new__(cls, name: str, access: Access, description: str) -> Rule:
        rule = super().__new__(cls, name)
        rule.access = access
        rule.description = description
        return rule


#: List tasks (``GET /tasks``, ``GET /<collection>/<id>/tasks``).
TASKS_LIST: Final = Rule("tasktoolkit:tasks:list", READ, "List tasks.")
#: Show one task.
TASKS_SHOW: Final = Rule("tasktoolkit:tasks:show", READ, "Show a task.")
#: See the hosts that ran a task and the tracebacks of its failures.
TASKS_SHOW_HOST: Final = Rule(
    "tasktoolkit:tasks:show_host", ADMIN, "See tasks' hosts and tracebacks."
)
#: Cancel a task.
TASKS_CANCEL: Final = Rule("tasktoolkit:tasks:cancel", ACT, "Cancel a task.")
#: Re-run a failed or cancelled task.
TASKS_RETRY: Final = Rule("tasktoolkit:tasks:retry", ACT, "Re-run a failed or cancelled task.")
#: List operations.
OPERATIONS_LIST: Final = Rule("tasktoolkit:operations:list", READ, "List operations.")
#: Show one operation (with its tasks).
OPERATIONS_SHOW: Final = Rule("tasktoolkit:operations:show", READ, "Show an operation.")
#: Cancel every active task of an operation.
OPERATIONS_CANCEL: Final = Rule(
    "tasktoolkit:operations:cancel", ACT, "Cancel an operation's tasks."
)
#: List the workers (``GET /workers``): hosts of every project, so asked of no project,
#: which only system-scoped readers (and system admins) pass.
WORKERS_LIST: Final = Rule("tasktoolkit:workers:list", READ, "List the live workers.")
#: Re-run every failed or cancelled task of an operation.
OPERATIONS_RETRY: Final = Rule(
    "tasktoolkit:operations:retry", ACT, "Re-run an operation's failed or cancelled tasks."
)
#: Every rule the toolkit asks about.
RULES: tuple[Rule, ...] = (
    TASKS_LIST,
    TASKS_SHOW,
    TASKS_SHOW_HOST,
    TASKS_CANCEL,
    TASKS_RETRY,
    OPERATIONS_LIST,
    OPERATIONS_SHOW,
    OPERATIONS_CANCEL,
    WORKERS_LIST,
    OPERATIONS_RETRY,
)
#: The rules that only read, which a system-scoped reader passes.
READ_RULES = frozenset(rule for rule in RULES if rule.access == READ)
_ACCESS: dict[str, Access] = {str(rule): rule.access for rule in RULES}
#: The role each kind of rule needs (:func:`default_authorize`).
_NEEDS: dict[Access, str] = {READ: "reader", ACT: "member", ADMIN: "admin"}
#: keystone's default role implications, each role before the one it implies.
_IMPLIES = (("admin", "member"), ("member", "reader"))

#: The longest project or user id the records keep (their columns' size, in characters).
CALLER_ID_LENGTH = 64
# Characters no column can keep on every database: NUL (PostgreSQL refuses it),
# lone surrogates (no UTF-8 encoding), and the other C0 controls and DEL.
_UNSTORABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller of one request.

    :param system_scope: keystone's system scope of the token (``"all"``), or
        ``None`` for a project-scoped (or unscoped) caller.
    """

    project_id: str | None = None
    user_id: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    system_scope: str | None = None


#: Turns a WSGI environ into a :class:`Caller`.
CallerGetter = Callable[[Mapping[str, Any]], Caller]
#: ``authorize(caller, rule, target)``: whether ``caller`` may do what ``rule``
#: names on ``target`` (a mapping with at least ``project_id``).
Authorize = Callable[[Caller, str, Mapping[str, Any]], bool]


def _header(environ: Mapping[str, Any], name: str) -> str | None:
    value = environ.get(name)
    if not isinstance(value, str):
        return None
    return value.strip() or None


def keystone_caller(environ: Mapping[str, Any]) -> Caller:
    """The caller as keystonemiddleware sets it: ``X-Project-Id``, ``X-User-Id``, ``X-Roles``,
    ``OpenStack-System-Scope``."""
    roles = environ.get("HTTP_X_ROLES")
    return Caller(
        project_id=_header(environ, "HTTP_X_PROJECT_ID"),
        user_id=_header(environ, "HTTP_X_USER_ID"),
        roles=frozenset(r.strip().lower() for r in roles.split(",") if r.strip())
        if isinstance(roles, str)
        else frozenset(),
        system_scope=_header(environ, "HTTP_OPENSTACK_SYSTEM_SCOPE"),
    )


def anonymous_caller(environ: Mapping[str, Any]) -> Caller:
    """Nobody: for a filter placed before the authentication, whose caller headers are
    still the client's own (``caller_getter = tasktoolkit.caller:anonymous_caller``)."""
    return Caller(project_id=None, user_id=None)


def caller_id_fits(value: object) -> bool:
    """Whether ``value`` may be recorded as a project or user id as it is: ``None``, or
    text of at most :data:`CALLER_ID_LENGTH` characters without a control character."""
    return value is None or (
        isinstance(value, str)
        and len(value) <= CALLER_ID_LENGTH
        and _UNSTORABLE.search(value) is None
    )


def check_caller(caller: Caller) -> Caller:
    """``caller``, if its project and user ids fit the records; never cut.

    :raises InvalidCallerError: an id that is not text, is longer than
        :data:`CALLER_ID_LENGTH` characters or has a control character.
    """
    for what, value in (("project", caller.project_id), ("user", caller.user_id)):
        if caller_id_fits(value):
            continue
        if not isinstance(value, str):
            raise InvalidCallerError(f"the {what} id must be text, got {type(value).__name__}")
        if len(value) > CALLER_ID_LENGTH:
            raise InvalidCallerError(
                f"the {what} id is {len(value)} characters long; at most {CALLER_ID_LENGTH}"
            )
        if _UNSTORABLE.search(value):
            raise InvalidCallerError(f"the {what} id has a control character")
    return caller


def implied_roles(roles: Iterable[str]) -> frozenset[str]:
    """``roles`` with those keystone's default roles imply: ``admin`` implies ``member``,
    which implies ``reader`` (a keystone token lists them all; a trusted header may not)."""
    found = set(roles)
    for role, implied in _IMPLIES:
        if role in found:
            found.add(implied)
    return frozenset(found)


def default_authorize(caller: Caller, rule: str, target: Mapping[str, Any]) -> bool:
    """keystone's secure RBAC, for every rule of :data:`RULES`, by its :attr:`Rule.access`.

    - a ``read`` rule needs the ``reader`` role, an ``act`` rule ``member``, an
      ``admin`` rule (hosts and tracebacks, :data:`TASKS_SHOW_HOST`) ``admin``;
      admin implies member implies reader (:func:`implied_roles`);
    - a project-scoped caller passes them in its own project only (a project
      admin administers that project, not every one);
    - a system-scoped caller (``system_scope == "all"``) passes the ``read``
      rules in every project; only a system admin passes the others there;
    - a caller with no role passes none.
    """
    access = _ACCESS.get(rule)
    if access is None:
        return False
    roles = implied_roles(caller.roles)
    if _NEEDS[access] not in roles:
        return False
    if caller.system_scope == "all":
        return access == READ or "admin" in roles
    project_id = target.get("project_id")
    return caller.project_id is not None and project_id == caller.project_id
