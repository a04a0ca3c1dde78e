"""Whether a caller may see a resource: the hook a resource's endpoints ask first.

A resource's endpoints (``/<collection>/<id>/tasks...``) answer ``404`` for a
resource the caller may not see, exactly as for one that does not exist. The
host decides with a :class:`ResourceVisibility` hook; :func:`resource_visible`
is the default.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from sqlalchemy import BigInteger, Integer, String, Uuid, inspect
from sqlalchemy.orm import Session

from tasktoolkit.caller import Caller
from tasktoolkit.orm import TaskResource

__all__ = ["UUID_LENGTH", "ResourceVisibility", "canonical_resource_id", "resource_visible"]

#: The length of a uuid in its canonical text form.
UUID_LENGTH = 36


class ResourceVisibility(Protocol):
    """Whether a caller may see a resource (and so its tasks).

    :param session: a session to look the resource up with.
    :param model: the resource's model.
    :param resource_id: its primary key, as text (already of the key's type).
    :param caller: who asks.
    :param admin: whether the caller may see every project's records under the
        rule of the request (``tasktoolkit:tasks:list`` or ``...:show``).
    """

    def __call__(
        self,
        session: Session,
        model: type[TaskResource],
        resource_id: str,
        *,
        caller: Caller,
        admin: bool,
    ) -> bool: ...


def canonical_resource_id(model: type[TaskResource], raw: str) -> Any | None:
    """``raw`` (from a URL) as a value of ``model``'s primary key, or ``None`` if it cannot be one.

    Refusing here keeps malformed ids (letters for an integer key, NUL bytes,
    over-long text) away from the database, which would answer them with an error.
    """
    column = model.__mapper__.primary_key[0]
    kind = column.type
    if isinstance(kind, Integer):
        bits = 63 if isinstance(kind, BigInteger) else 31
        if not raw.isascii() or not raw.lstrip("-").isdigit() or len(raw) > 20:
            return None
        number = int(raw)
        return number if -(2**bits) <= number < 2**bits else None
    if isinstance(kind, Uuid):
        try:
            return uuid.UUID(raw) if len(raw) <= UUID_LENGTH else None
        except ValueError:
            return None
    if not raw or not raw.isprintable():
        return None
    if isinstance(kind, String) and kind.length is not None and len(raw) > kind.length:
        return None
    return raw


def resource_visible(
    session: Session,
    model: type[TaskResource],
    resource_id: str,
    *,
    caller: Caller,
    admin: bool,
) -> bool:
    """The default visibility: the resource exists and is in the caller's project.

    Callers who may see every project's records (``admin``) see every resource.
    A model without a ``project_id`` attribute is visible to them only (pass your
    own hook to say otherwise).
    """
    key = canonical_resource_id(model, resource_id)
    if key is None:
        return False
    resource = session.get(model, key)
    # MariaDB's default collation finds 'abc' for 'ABC': ids compare exactly here.
    if resource is None or inspect(resource).identity != (key,):
        return False
    if admin:
        return True
    project_id = getattr(resource, "project_id", None)
    return caller.project_id is not None and project_id == caller.project_id
