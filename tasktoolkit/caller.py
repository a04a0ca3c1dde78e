"""Who is calling: project, user and roles, read from the WSGI environ.

The toolkit does no authentication. An authentication middleware in front of
it (keystonemiddleware, for instance) sets headers; a *caller getter* turns the
environ into a :class:`Caller`. The default reads keystonemiddleware's
``X-Project-Id``, ``X-User-Id`` and ``X-Roles``.

Example::

    def my_caller(environ):
        token = environ["my.auth.token"]
        return Caller(project_id=token.project, user_id=token.user, roles=frozenset(token.roles))

    OperationMiddleware(app, engine=engine, caller_getter=my_caller)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AdminPredicate", "Caller", "CallerGetter", "is_admin_role", "keystone_caller"]


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller of one request."""

    project_id: str | None = None
    user_id: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)


#: Turns a WSGI environ into a :class:`Caller`.
CallerGetter = Callable[[Mapping[str, Any]], Caller]
#: Whether a caller may see every project's records (and tracebacks, hosts).
AdminPredicate = Callable[[Caller], bool]


def _header(environ: Mapping[str, Any], name: str) -> str | None:
    value = environ.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:64] or None


def keystone_caller(environ: Mapping[str, Any]) -> Caller:
    """The caller as keystonemiddleware sets it: ``X-Project-Id``, ``X-User-Id``, ``X-Roles``."""
    roles = environ.get("HTTP_X_ROLES")
    return Caller(
        project_id=_header(environ, "HTTP_X_PROJECT_ID"),
        user_id=_header(environ, "HTTP_X_USER_ID"),
        roles=frozenset(r.strip().lower() for r in roles.split(",") if r.strip())
        if isinstance(roles, str)
        else frozenset(),
    )


def is_admin_role(caller: Caller) -> bool:
    """The default admin predicate: the caller has the ``admin`` role."""
    return "admin" in caller.roles
