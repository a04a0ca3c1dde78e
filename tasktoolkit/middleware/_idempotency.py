"""The ``Idempotency-Key`` of a mutating request: read it, fingerprint the request, keep and
replay its response.

The operation middleware reserves the key with the request's operation before
the app runs (:func:`tasktoolkit.orm._idempotency.reserve`); this module is the
HTTP side of it: the key as sent (1 to 255 printable ASCII characters), the
request's fingerprint (method, path, query string and body: the body is read
once, hashed, and handed on to the app from a spooled copy), a
:class:`ResponseRecorder` that passes the response through while keeping what
a replay needs, and :func:`replay`.

A replay carries the first response's status, ``Operation-Location``,
``Location``, ``Content-Type`` and body, with ``Idempotent-Replayed: true``;
a body over 1 MiB is not kept, and its replay is empty with
``Idempotent-Body-Omitted: true``.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import IO, TYPE_CHECKING

from tasktoolkit.errors import ApplicationError, InvalidHeaderError
from tasktoolkit.http_errors import JSON_CONTENT_TYPE, error_body, request_id_of
from tasktoolkit.orm._idempotency import MAX_KEY_LENGTH, StoredResponse

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "MAX_REPLAYED_BODY",
    "REPLAYED_HEADERS",
    "ResponseRecorder",
    "fingerprint",
    "idempotency_key",
    "raised_response",
    "replay",
]

#: The largest body kept for a replay.
MAX_REPLAYED_BODY = 1024 * 1024
#: The response headers a replay carries (besides the request id).
REPLAYED_HEADERS = ("Operation-Location", "Location", "Content-Type")
_REPLAYED = frozenset(name.lower() for name in REPLAYED_HEADERS)
_KEY_ENVIRON = "HTTP_IDEMPOTENCY_KEY"
# Printable ASCII; no space at either end (a server would have stripped it).
_KEY = re.compile(r"\A[!-~](?:[ -~]*[!-~])?\Z")
_CHUNK = 64 * 1024


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


def _content_length(environ: WSGIEnvironment) -> int | None:
    raw = environ.get("CONTENT_LENGTH")
    if not raw:
        return None
    try:
        length = int(raw)
    except ValueError:
        return None
    return length if length >= 0 else None


def fingerprint(environ: WSGIEnvironment, recorder: ResponseRecorder) -> str:
    """SHA-256 (hex) of the method, path, query string and body of the request.

    The body is read (``CONTENT_LENGTH`` bytes, or to its end when the server
    marks the input terminated) and replaced in the environ by a copy the app
    reads as if untouched; a large body goes to a temporary file, not memory,
    which ``recorder.close()`` removes.
    """
    digest = hashlib.sha256()
    for part in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING"):
        digest.update(str(environ.get(part, "")).encode("latin-1", "replace") + b"\0")
    length = _content_length(environ)
    stream = environ.get("wsgi.input")
    if stream is None or (length is None and not environ.get("wsgi.input_terminated")):
        return digest.hexdigest()
    copy = recorder.spooled = tempfile.SpooledTemporaryFile(max_size=MAX_REPLAYED_BODY)
    left = length
    while left is None or left > 0:
        chunk = stream.read(_CHUNK if left is None else min(_CHUNK, left))
        if not chunk:
            break
        digest.update(chunk)
        copy.write(chunk)
        if left is not None:
            left -= len(chunk)
    copy.seek(0)
    environ["wsgi.input"] = copy
    return digest.hexdigest()


class ResponseRecorder:
    """Passes a response through and keeps what a replay of it needs (never the
    whole of a large body)."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        #: The copy of the request's body the app reads.
        self.spooled: IO[bytes] | None = None
        self._chunks: list[bytes] = []
        self._size = 0

    def close(self) -> None:
        """Let go of the request body's copy."""
        if self.spooled is not None:
            self.spooled.close()

    def start(self, status_line: str, headers: list[tuple[str, str]]) -> None:
        """Note the status and the replayed headers, as the client gets them."""
        try:
            self.status = int(status_line[:3])
        except ValueError:
            self.status = 500
        self.headers = [(name, value) for name, value in headers if name.lower() in _REPLAYED]
        self._chunks, self._size = [], 0

    def write(self, chunk: bytes) -> None:
        """Keep ``chunk`` while the body is within :data:`MAX_REPLAYED_BODY`."""
        self._size += len(chunk)
        if self._size <= MAX_REPLAYED_BODY:
            self._chunks.append(bytes(chunk))
        else:
            self._chunks = []

    def writer(self, write: Callable[[bytes], object]) -> Callable[[bytes], object]:
        """The server's ``write()`` callable, keeping what passes through it."""

        def keep(chunk: bytes) -> object:
            self.write(chunk)
            return write(chunk)

        return keep

    def tee(self, body: Iterable[bytes]) -> _Tee:
        """``body``, its chunks kept as they pass; closing it closes ``body``."""
        return _Tee(body, self.write)

    def stored(self) -> StoredResponse:
        """The response as a replay sends it."""
        body = None if self._size > MAX_REPLAYED_BODY else b"".join(self._chunks)
        return StoredResponse(self.status, tuple(self.headers), body)


def raised_response(environ: WSGIEnvironment, location: str) -> StoredResponse:
    """The replay of a request whose app raised: the contract's 500, as its operation says
    (the one the request-id middleware answered it with)."""
    error = ApplicationError("the server failed to answer; the error is logged with this id")
    body = error_body(
        status=error.status, code=error.code, detail=str(error), request_id=request_id_of(environ)
    )
    headers = (("Content-Type", JSON_CONTENT_TYPE), ("Operation-Location", location))
    return StoredResponse(error.status, headers, body)


class _Tee:
    """An app's body passed through chunk by chunk, each handed to ``keep`` too."""

    __slots__ = ("_iterable", "_iterator", "_keep")

    def __init__(self, iterable: Iterable[bytes], keep: Callable[[bytes], None]) -> None:
        self._iterable = iterable
        self._iterator: Iterator[bytes] | None = None
        self._keep = keep

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = iter(self._iterable)
        chunk = next(self._iterator)
        self._keep(chunk)
        return chunk

    def close(self) -> None:
        close = getattr(self._iterable, "close", None)
        if close is not None:
            close()


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
