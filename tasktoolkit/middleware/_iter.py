"""Wrapping a WSGI response iterable so that work runs once it is closed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

__all__ = ["ClosingIterator"]


class ClosingIterator:
    """Pass a response body through untouched; on ``close()`` close it, then run ``on_close``.

    The body is never buffered. ``on_close`` runs exactly once, even when the
    wrapped ``close()`` raises; ``on_error`` runs (before ``on_close``) when
    producing a chunk raised.

    :param on_close: called after the wrapped iterable's ``close()``.
    :param on_error: called with the exception raised while iterating.
    """

    __slots__ = ("_closed", "_iterable", "_next", "_on_close", "_on_error")

    def __init__(
        self,
        iterable: Iterable[bytes],
        on_close: Callable[[], object],
        on_error: Callable[[BaseException], object] | None = None,
    ) -> None:
        self._iterable = iterable
        self._next: Callable[[], bytes] | None = None
        self._on_close = on_close
        self._on_error = on_error
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._next is None:
            self._next = iter(self._iterable).__next__
        try:
            return self._next()
        except StopIteration:
            raise
        except BaseException as exc:
            if self._on_error is not None:
                self._on_error(exc)
            raise

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
