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

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tasktoolkit.errors import InvalidCallerError

__all__ = [
    "CALLER_ID_LENGTH",
    "AdminPredicate",
    "Caller",
    "CallerGetter",
    "check_caller",
    "is_admin_role",
    "keystone_caller",
]

#: The longest project or user id the records keep (their columns' size, in characters).
CALLER_ID_LENGTH = 64
# Characters no column can keep on every database: NUL (PostgreSQL refuses it),
# lone surrogates (no UTF-8 encoding), and the other C0 controls and DEL.
_UNSTORABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


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
    return value.strip() or None


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


def check_caller(caller: Caller) -> Caller:
    """``caller``, if its project and user ids fit the records; never cut.

    :raises InvalidCallerError: an id that is not text, is longer than
        :data:`CALLER_ID_LENGTH` characters or has a control character.
    """
    for what, value in (("project", caller.project_id), ("user", caller.user_id)):
        if value is None:
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


def is_admin_role(caller: Caller) -> bool:
    """The default admin predicate: the caller has the ``admin`` role."""
    return "admin" in caller.roles
