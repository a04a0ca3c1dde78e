"""The ``Idempotency-Key`` of a mutating request: read it, fingerprint the request, replay
its response.

The operation middleware reserves the key with the request's operation before
the app runs (:func:`tasktoolkit.orm._idempotency.reserve`); this module is the
HTTP side of it: the key as sent (1 to 255 printable ASCII characters), the
request's fingerprint (method, path, query string and body: the body is read
once, up to :data:`~tasktoolkit.wsgi_input.MAX_BODY`, hashed, and handed on to
the app), and :func:`replay`. What a replay keeps is the request protocol's
(:mod:`tasktoolkit._request_protocol`).

A replay carries the first response's status, ``Operation-Location``,
``Location``, ``Content-Type`` and body, with ``Idempotent-Replayed: true``;
a body over 1 MiB is not kept, and its replay is empty with
``Idempotent-Body-Omitted: true``.
"""

from __future__ import annotations

import hashlib
import re
from http import HTTPStatus
from typing import TYPE_CHECKING

from tasktoolkit._request_protocol import MAX_REPLAYED_BODY, REPLAYED_HEADERS, StoredResponse
from tasktoolkit.errors import InvalidHeaderError
from tasktoolkit.orm._idempotency import MAX_KEY_LENGTH
from tasktoolkit.wsgi_input import read_body

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["MAX_REPLAYED_BODY", "REPLAYED_HEADERS", "fingerprint", "idempotency_key", "replay"]

_KEY_ENVIRON = "HTTP_IDEMPOTENCY_KEY"
# Printable ASCII; no space at either end (a server would have stripped it).
_KEY = re.compile(r"\A[!-~](?:[ -~]*[!-~])?\Z")


def idempotency_key(environ: WSGIEnvironment) -> str | None:
    """The request's ``Idempotency-Key``, or ``None`` when it has none.

    :raises InvalidHeaderError: empty, longer than 255 characters, or with
        anything but printable ASCII.
    """
    value = environ.get(_KEY_ENVIRON)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidHeaderError("Idempotency-Key: must not be empty")
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidHeaderError(f"Idempotency-Key: longer than {MAX_KEY_LENGTH} characters")
    if not _KEY.match(value):
        raise InvalidHeaderError(
            "Idempotency-Key: only printable ASCII characters (no control characters)"
        )
    return value


def fingerprint(environ: WSGIEnvironment) -> str:
    """SHA-256 (hex) of the method, path, query string and body of the request.

    The body is read (:func:`~tasktoolkit.wsgi_input.read_body`: at most its
    limit, nothing spooled) and put back for the app to read as if untouched.

    :raises BodyTooLargeError: a body over the limit (a 413, before the key is reserved).
    :raises IncompleteBodyError: a body shorter than its ``Content-Length``.
    """
    digest = hashlib.sha256()
    for part in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING"):
        digest.update(str(environ.get(part, "")).encode("latin-1", "replace") + b"\0")
    digest.update(read_body(environ))
    return digest.hexdigest()


def replay(
    stored: StoredResponse, start_response: StartResponse, exc_info: OptExcInfo | None = None
) -> list[bytes]:
    """Send ``stored`` again, marked ``Idempotent-Replayed: true``; the app is not called."""
    try:
        reason = HTTPStatus(stored.status).phrase
    except ValueError:
        reason = "Unknown"
    body = b"" if stored.body is None else stored.body
    headers: list[tuple[str, str]] = [*stored.headers, ("Idempotent-Replayed", "true")]
    if stored.body is None:
        headers.append(("Idempotent-Body-Omitted", "true"))
    if stored.status >= 200 and stored.status not in (204, 304):
        headers.append(("Content-Length", str(len(body))))
    start_response(f"{stored.status} {reason}", headers, exc_info)
    return [body]
