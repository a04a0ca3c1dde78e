"""Coercing Paste's string options (``asbool``, ``aslist``, dotted names)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from datetime import timedelta

__all__ = ["asbool", "asdeadline", "asint", "aslist", "asttl", "resolve"]

_TRUE = frozenset({"true", "yes", "on", "y", "t", "1"})
_FALSE = frozenset({"false", "no", "off", "n", "f", "0", ""})


def asbool(value: object, *, name: str = "option") -> bool:
    """``True`` for ``true``/``yes``/``on``/``1`` (any case), ``False`` for the opposites."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"{name}: expected a boolean (true/false), got {value!r}")


def aslist(value: object, *, name: str = "option") -> list[str]:
    """Words split on commas and whitespace: ``"POST, PUT"`` -> ``["POST", "PUT"]``."""
    if isinstance(value, str):
        return [w for w in value.replace(",", " ").split() if w]
    if isinstance(value, Iterable):
        return [str(w) for w in value]
    raise ValueError(f"{name}: expected a list of words, got {value!r}")


def asint(value: object, *, name: str = "option") -> int:
    """An integer from an ``int`` or a decimal string."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{name}: expected an integer, got {value!r}")


def asttl(value: object, *, name: str = "ttl") -> timedelta | None:
    """A time-to-live in seconds; ``none`` (or ``never``) keeps records forever."""
    if isinstance(value, str) and value.strip().lower() in ("none", "never"):
        return None
    return timedelta(seconds=asint(value, name=name))


def asdeadline(value: object, *, name: str = "deadline") -> float | None:
    """A deadline in seconds (``2.5``); ``none`` for no deadline. Checked by the middleware."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word == "none":
            return None
        try:
            return float(word)
        except ValueError:
            pass
    raise ValueError(f"{name}: expected a number of seconds or none, got {value!r}")


def resolve(value: str, *, name: str = "option") -> object:
    """The object a ``package.module:attribute`` string names."""
    module_name, sep, attribute = value.strip().partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{name}: expected 'package.module:attribute', got {value!r}")
    try:
        found: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{name}: cannot import {value!r}: {exc}") from exc
    return found
