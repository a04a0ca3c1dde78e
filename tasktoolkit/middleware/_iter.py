"""Wrapping a WSGI response iterable so that work runs once it is closed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

__all__ = ["ClosingIterator", "OnError"]

#: Called with the exception raised while producing a chunk, and whether a
#: non-empty chunk was produced before it; returns a body to send instead (only
#: sensible when nothing was), or ``None`` to let the exception go on.
OnError = Callable[[BaseException, bool], "Iterable[bytes] | None"]


class ClosingIterator:
    """Pass a response body through untouched; on ``close()`` close it, then run ``on_close``.

    The body is never buffered. ``on_close`` runs exactly once, even when the
    wrapped ``close()`` raises; ``on_error`` runs (before ``on_close``) when
    producing a chunk raised, and may answer with a body of its own.

    :param on_close: called after the wrapped iterable's ``close()``.
    :param on_error: see :data:`OnError`.
    """

    __slots__ = ("_closed", "_instead", "_iterable", "_next", "_on_close", "_on_error", "_sent")

    def __init__(
        self,
        iterable: Iterable[bytes],
        on_close: Callable[[], object],
        on_error: OnError | None = None,
    ) -> None:
        self._iterable = iterable
        self._next: Callable[[], bytes] | None = None
        self._on_close = on_close
        self._on_error = on_error
        self._instead: Iterator[bytes] | None = None
        self._sent = False
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._instead is not None:
            return next(self._instead)
        if self._next is None:
            self._next = iter(self._iterable).__next__
        try:
            chunk = self._next()
        except StopIteration:
            raise
        except BaseException as exc:
            instead = None if self._on_error is None else self._on_error(exc, self._sent)
            if instead is None:
                raise
            self._instead = iter(instead)
            return next(self._instead)
        if chunk:
            self._sent = True
        return chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._iterable, "close", None)
        try:
            if close is not None:
                close()
        finally:
            self._on_close()
