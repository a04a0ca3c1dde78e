"""Reading what a client sent, bounded and strict: the body up to a limit, the query as UTF-8.

Hostile or broken input is a typed error (a 413 or a 400 with the request id,
through :func:`tasktoolkit.http_errors.response_for`), never a 500, and never
more than the limit read into memory or spooled: the operation middleware reads
a keyed request's body with :func:`read_body` (to fingerprint it) under the
same limit as an app that uses it.

Example (a webob controller)::

    try:
        body = read_body(request.environ)
        params = query_pairs(request.environ)
    except TaskToolkitError as error:
        return response_for(request.environ, error)
"""

from __future__ import annotations

import io
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

from tasktoolkit.errors import BodyTooLargeError, IncompleteBodyError, InvalidFilterError

__all__ = ["MAX_BODY", "query_pairs", "read_body"]

#: The largest request body read, in bytes (1 MiB).
MAX_BODY = 1 << 20
_CHUNK = 64 * 1024


def _content_length(environ: Mapping[str, Any]) -> int | None:
    raw = environ.get("CONTENT_LENGTH")
    if not raw:
        return None
    try:
        length = int(raw)
    except ValueError:
        raise IncompleteBodyError(f"Content-Length: not a number: {str(raw)[:32]!r}") from None
    if length < 0:
        raise IncompleteBodyError(f"Content-Length: negative: {length}")
    return length


def read_body(environ: MutableMapping[str, Any], *, limit: int = MAX_BODY) -> bytes:
    """The request's body, at most ``limit`` bytes, read once.

    ``CONTENT_LENGTH`` bytes are read, or, when the server marks the input
    terminated (a chunked body), up to its end. The body read is put back in
    the environ (``wsgi.input``, with its ``CONTENT_LENGTH``), so whoever reads
    it next reads it whole.

    :raises BodyTooLargeError: over ``limit`` (a ``Content-Length`` over it is
        refused before anything is read).
    :raises IncompleteBodyError: shorter than its ``Content-Length``, or the
        client went away while sending it.
    """
    length = _content_length(environ)
    stream = environ.get("wsgi.input")
    if stream is None or (length is None and not environ.get("wsgi.input_terminated")):
        return b""
    if length is not None and length > limit:
        raise BodyTooLargeError(f"the body is over {limit} bytes")
    want = limit + 1 if length is None else length
    chunks: list[bytes] = []
    size = 0
    try:
        while size < want:
            chunk = stream.read(min(_CHUNK, want - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (OSError, ValueError) as exc:  # the server's own (gunicorn's NoMoreData is an OSError)
        raise IncompleteBodyError(f"the client stopped sending the body: {exc}") from None
    if size > limit:
        raise BodyTooLargeError(f"the body is over {limit} bytes")
    if length is not None and size < length:
        raise IncompleteBodyError(f"the body has {size} of its {length} bytes (Content-Length)")
    body = b"".join(chunks)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def query_pairs(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The query string's ``(name, value)`` pairs, decoded as UTF-8, blanks kept.

    :raises InvalidFilterError: a percent-encoded byte that is not UTF-8 (``?x=%ff``).
    """
    # WSGI hands the query over as latin-1 decoded bytes; the client meant UTF-8.
    raw = str(environ.get("QUERY_STRING", "")).encode("latin-1", "replace")
    pairs = []
    try:
        for part in raw.split(b"&"):
            if part:
                name, _, value = part.replace(b"+", b" ").partition(b"=")
                pairs.append((_decoded(name), _decoded(value)))
    except UnicodeError:
        raise InvalidFilterError("the query string is not UTF-8 once percent-decoded") from None
    return pairs


def _decoded(text: bytes) -> str:
    return unquote_to_bytes(text).decode("utf-8")
